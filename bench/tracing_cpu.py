"""CPU time per request of one replica without tracing, with tracing at 0 % and at 1 %.

    .venv/bin/python bench/tracing_cpu.py [--seconds 10 --rounds 3]

req/s swings by ±20 % from round to round on a shared machine; the CPU the server's
processes (gunicorn master and worker, read from /proc) spend per request answered
swings less, and the 0 % point separates what every request pays when tracing is on
(the sampling decision) from what the 1 % of sampled ones add (spans, their export).
S1's row and harness (bench/run.py: wrk on core 0, the servers on core 1), the three
servers measured in turn, the order reversed every other round.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import run
from tests.ports import free_port


def cpu_seconds(master: int) -> float:
    """User + system CPU of a gunicorn master and its workers so far."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    total = 0.0
    for pid in [master, *map(int, children)]:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def master_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1]
    found = subprocess.run(
        ["pgrep", "-f", "--", f"--bind 127.0.0.1:{port} "], capture_output=True, text=True
    ).stdout.split()
    return min(map(int, found))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    models = run.BENCH / "out" / "models"
    b = run.Bench(args.seconds, 3, 64, models, 1)
    body, path = run.churn_body(), "/models/churn/predict"
    with ExitStack() as up:
        port = free_port()
        sink = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "tests.otlp_receiver", "--port", str(port)]
        up.enter_context(run.server(argv, sink + "/", {"PYTHONPATH": str(run.ROOT)}, run.LOAD_CPU))
        traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink}
        servers = {
            "off": up.enter_context(b.modelgate("churn")),
            "on, 0 %": up.enter_context(
                b.modelgate("churn", env={**traced, "OTEL_TRACES_SAMPLER_ARG": "0"})
            ),
            "on, 1 %": up.enter_context(b.modelgate("churn", env=traced)),
        }
        masters = {name: master_pid(url) for name, url in servers.items()}
        for i in range(args.rounds):
            order = list(servers.items())
            for name, url in order if i % 2 else reversed(order):
                run.wrk(url, path, body, b.warmup, 64)
                before = cpu_seconds(masters[name])
                stats, _ = run.wrk(url, path, body, args.seconds, 64)
                used = cpu_seconds(masters[name]) - before
                sys.stdout.write(
                    f"round {i} {name:<8} {stats['rps']:7.0f} req/s "
                    f"{1e6 * used / stats['requests']:6.1f} CPU µs/request\n"
                )
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
