"""make bench: run every scenario end to end and write bench/RESULTS.md and results.json.

Each scenario starts what it needs on free loopback ports, checks that every server answers
correctly (a wrong answer fails the server), warms it up, then measures with wrk and the
Lua script in bench/lua/load.lua. Servers are pinned to core 1 and wrk to core 0 where the
scenario says so. Baseline and ceiling run in the same session and are measured in turn
with the server they are compared with, for `--rounds` rounds (median round reported), so
ratios compare like with like even as the machine's speed drifts (S4's baseline rounds
bracket the stack's, see s4_s5). S6 ranks 100 random items for a random user through the
gateway, against a seed-shaped baseline on the same layout (s6). `--seconds 1 --warmup 0
--rounds 1` is the smoke mode the tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tests.ports
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent
LUA = BENCH / "lua" / "load.lua"
SERVER_CPU, LOAD_CPU = "1", "0"

# Same-row comparisons (issue 20), measured in S1/S2 alongside modelgate's own point.
V2_SAME_ROW = "V2 JSON, S1's row (modelgate)"
SINGLE_SAME_ROW = "single route, one positional row (modelgate)"
BATCH_SAME_ROW = "batch route, the same row (modelgate)"
# Tracing's cost (issue 25): S1 with tracing on at the default sampling, exporting to a
# local OTLP/HTTP sink, against modelgate (1 worker) without it.
TRACED = "tracing on, 1 % sampled (modelgate)"

CHURN_FEATURES = {
    "age": 35, "income": "{N}", "credit_score": 680, "num_purchases": 24,
    "account_age_days": 730, "avg_transaction": 85.5, "num_returns": 2,
    "is_premium": False, "region": 2, "category_preference": 3,
}  # fmt: skip


@dataclass
class Result:
    scenario: str
    server: str
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    p999_ms: float | None = None
    rows_per_request: int = 1
    note: str = ""
    command: str = ""
    rounds: list[float] = field(default_factory=list)  # every round's value of rounds_of
    rounds_of: str = "rps"


def http(
    url: str, body: bytes | None = None, timeout: float = 10, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    headers = headers or {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return int(r.status), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return int(e.code), None


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}) before {url} was ready")
        try:
            if http(url, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)  # polling interval
    raise RuntimeError(f"{url} not ready after {timeout}s")


@contextmanager
def server(argv: list[str], ready_url: str, env: dict[str, str], cpu: str | None) -> Iterator[None]:
    """Start a server (pinned to ``cpu``), wait for it, and stop it by PID afterwards."""
    full = ["taskset", "-c", cpu, *argv] if cpu else argv
    log = open(BENCH / "out" / f"server-{Path(argv[0]).name}-{time.time_ns()}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(full, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(ready_url, proc)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wrk(
    url: str,
    path: str,
    body: str,
    seconds: float,
    connections: int,
    *,
    repeat: float = 0.0,
    rate: float = 0.0,
    pinned: bool = True,
    body_file: Path | None = None,
    header: str = "",
    rank: str = "",
) -> tuple[dict[str, Any], str]:
    env = {
        **os.environ,
        "BENCH_PATH": path,
        "BENCH_BODY": body,
        "BENCH_BODY_FILE": str(body_file or ""),
        "BENCH_HEADER": header,
        "BENCH_REPEAT": str(repeat),
        "BENCH_RATE": str(rate),
        "BENCH_CONNECTIONS": str(connections),
        "BENCH_RANK": rank,
    }
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(LUA), url]
    if pinned:
        argv = ["taskset", "-c", LOAD_CPU, *argv]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("{"))
    stats = json.loads(line)
    stats["rps"] = stats["requests"] / stats["seconds"]
    shown = f"BENCH_PATH={path} BENCH_REPEAT={repeat}" + (f" BENCH_RATE={rate}" if rate else "")
    if body_file:
        shown += f" BENCH_BODY_FILE={body_file.name} BENCH_HEADER='{header}'"
    if rank:
        shown += f" BENCH_RANK={rank} BENCH_BODY='{body}'"
    # Paths relative to the repository: the command reads the same on any checkout.
    words = [str(LUA.relative_to(ROOT)) if w == str(LUA) else w for w in argv]
    return stats, f"{shown} {' '.join(words[3:] if pinned else words)}"


@dataclass
class Bench:
    seconds: float
    warmup: float
    connections: int
    models: Path
    rounds: int = 3
    results: list[Result] = field(default_factory=list)

    def compare(self, points: list[Callable[[], Result]], by: str = "rps") -> None:
        """Measure every point once per round, in turn, ``rounds`` times, and record each
        point's median round (by ``by``). On a shared VM the speed drifts by 15-25 % over
        minutes; interleaving puts a server and its reference in the same phases, so the
        ratio holds still where two back-to-back points would not."""
        measured: list[list[Result]] = [[] for _ in points]
        for _ in range(self.rounds):
            for point, results in zip(points, measured, strict=True):
                results.append(point())
        for results in measured:
            self.record(results, by)

    def record(self, results: list[Result], by: str = "rps", at: int | None = None) -> None:
        """Keep the median of one server's rounds (the lower middle for an even count),
        with every round's value beside it; at the end of the results or at ``at``."""
        ranked = sorted(results, key=lambda r: float(getattr(r, by)))
        chosen = ranked[(len(ranked) - 1) // 2]
        chosen.rounds = [round(float(getattr(r, by)), 2) for r in results]
        chosen.rounds_of = by
        chosen.non_2xx = sum(r.non_2xx for r in results)  # an error in any round counts
        self.results.insert(len(self.results) if at is None else at, chosen)

    def measure(
        self,
        scenario: str,
        name: str,
        url: str,
        path: str,
        body: str,
        rows: int = 1,
        connections: int | None = None,
        **kw: Any,
    ) -> Result:
        conns = connections or self.connections
        if self.warmup:
            wrk(url, path, body, self.warmup, conns, **kw)
        stats, command = wrk(url, path, body, self.seconds, conns, **kw)
        result = Result(
            scenario,
            name,
            stats["rps"] * rows,
            stats["p50_ms"],
            stats["p99_ms"],
            stats["non_2xx"] + stats["socket_errors"],
            stats["p999_ms"],
            rows,
            command=command,
        )
        print(
            f"{scenario:<4} {name:<28} {result.rps:>10.0f}/s  p50 {result.p50_ms:7.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms  non-2xx {result.non_2xx}",
            flush=True,
        )
        return result

    # --- servers -------------------------------------------------------------------------

    @contextmanager
    def ceiling(self, cpu: str | None = SERVER_CPU) -> Iterator[str]:
        port = free_port()
        argv = [
            str(VENV_BIN / "uvicorn"),
            "bench.servers.ceiling:app",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        url = f"http://127.0.0.1:{port}"
        with server(argv, url + "/", {"PYTHONPATH": str(ROOT)}, cpu):
            yield url

    @contextmanager
    def baseline(self, model_dir: Path, cpu: str | None = SERVER_CPU) -> Iterator[str]:
        port = free_port()
        argv = [
            str(VENV_BIN / "uvicorn"),
            "bench.servers.baseline:app",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        url = f"http://127.0.0.1:{port}"
        env = {"PYTHONPATH": str(ROOT), "BENCH_MODEL_DIR": str(model_dir)}
        with server(argv, url + "/openapi.json", env, cpu):
            yield url

    @contextmanager
    def modelgate(
        self, model: str, cpu: str | None = SERVER_CPU, env: dict[str, str] | None = None
    ) -> Iterator[str]:
        port = free_port()
        argv = [
            str(VENV_BIN / "modelgate"),
            "serve",
            "--model-repository",
            str(self.models),
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        url = f"http://127.0.0.1:{port}"
        env = {
            "MODELGATE_MODELS": json.dumps([model]),
            "MODELGATE_LOG_LEVEL": "INFO",
            **(env or {}),
        }
        with server(argv, url + "/ready", env, cpu):
            yield url

    @contextmanager
    def traced_modelgate(self, model: str) -> Iterator[str]:
        """modelgate (1 worker) with tracing on at the default sampling (1 %), exporting
        over OTLP/HTTP to a sink of its own (tests/otlp_receiver.py) on wrk's core."""
        port = free_port()
        sink = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "tests.otlp_receiver", "--port", str(port)]
        with (
            server(argv, sink + "/", {"PYTHONPATH": str(ROOT)}, LOAD_CPU),
            self.modelgate(model, env={"OTEL_EXPORTER_OTLP_ENDPOINT": sink}) as url,
        ):
            yield url


def check(url: str, path: str, body: str, expected: dict[str, Any], server_name: str) -> None:
    """A server that answers wrong is a failed server, not a fast one."""
    status, answer = http(url + path, body.replace("{N}", "75000").encode())
    if status != 200:
        raise RuntimeError(f"{server_name}: status {status} on {path}")
    for key, want in expected.items():
        got = answer.get(key) if isinstance(answer, dict) else None
        if isinstance(want, float):
            ok = isinstance(got, float) and abs(got - want) < 1e-4
        elif isinstance(want, list):
            ok = isinstance(got, list) and all(
                abs(a - b) < 1e-4 for a, b in zip(got, want, strict=True)
            )
        else:
            ok = got == want
        if not ok:
            raise RuntimeError(f"{server_name}: {key} = {got!r}, expected {want!r}")


def expected_answers(models: Path) -> dict[str, Any]:
    """What a correct server answers, computed with torch directly."""
    import torch

    out: dict[str, Any] = {}
    churn = json.loads((models / "churn/2/model.json").read_text())
    row = [float(v if v != "{N}" else 75000) for v in CHURN_FEATURES.values()]
    program = torch.export.load(str(models / "churn/2" / churn["file"])).module()
    with torch.no_grad():
        p = float(program(torch.tensor([row])).reshape(-1)[0])
        out["churn"] = {"probability": p, "prediction": int(p >= 0.5)}
        mlp = json.loads((models / "bench-mlp/1/model.json").read_text())
        net = torch.export.load(str(models / "bench-mlp/1" / mlp["file"])).module()
        probs = net(torch.full((1, 256), 0.5)).reshape(-1).tolist()
        out["bench-mlp"] = {"prediction": int(max(range(10), key=lambda i: probs[i]))}
        out["bench-mlp-probs"] = probs
    return out


def churn_body() -> str:
    return json.dumps({"features": CHURN_FEATURES}).replace('"{N}"', "{N}")


def v2_binary_body(rows: int) -> tuple[bytes, int]:
    """A V2 (Open Inference Protocol) request with the binary tensor extension: the JSON
    header, then the [rows, 256] FP32 input as raw bytes. Returns (body, header length)."""
    data = struct.pack(f"<{rows * 256}f", *([0.5] * (rows * 256)))
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [rows, 256],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(data)},
                }
            ]
        }
    ).encode()
    return header + data, len(header)


def churn_v2_body() -> str:
    """S1's row as a V2 JSON tensor (features in manifest order; false is 0)."""
    values = [0 if v is False else v for v in CHURN_FEATURES.values()]
    tensor = {"name": "input", "shape": [1, len(values)], "datatype": "FP32", "data": values}
    return json.dumps({"inputs": [tensor]}).replace('"{N}"', "{N}")


def mlp_positional(route: str) -> str:
    """One row of 256 values in manifest order, to the single or the batch route."""
    row = [0.5] * 256
    return json.dumps({"features": row} if route == "single" else {"instances": [row]})


def check_v2(url: str, path: str, body: str, want: dict[str, Any], server_name: str) -> None:
    status, answer = http(url + path, body.replace("{N}", "75000").encode())
    outputs = {o["name"]: o["data"] for o in (answer or {}).get("outputs", [])}
    if status != 200 or outputs.get("prediction") != [want["prediction"]]:
        raise RuntimeError(f"{server_name}: wrong V2 answer {status} {answer}")


def mlp_body(rows: int = 1) -> str:
    features = {f"f{i:03d}": 0.5 for i in range(256)}
    if rows == 1:
        return json.dumps({"features": features})
    return json.dumps({"instances": [features] * rows})


# --- scenarios ------------------------------------------------------------------------------


def s1_s2(b: Bench, expected: dict[str, Any]) -> None:
    for scenario, model, body, path_mg, want in (
        ("S1", "churn", churn_body(), "/models/churn/predict", expected["churn"]),
        ("S2", "bench-mlp", mlp_body(), "/models/bench-mlp/predict", expected["bench-mlp"]),
    ):
        model_dir = b.models / model / ("2" if model == "churn" else "1")
        with ExitStack() as up:
            base = up.enter_context(b.baseline(model_dir))
            mg = up.enter_context(b.modelgate(model))
            check(base, "/predict", body, want, "baseline")
            check(mg, path_mg, body, want, "modelgate")
            points = [
                partial(b.measure, scenario, "baseline (FastAPI tutorial)", base, "/predict", body),
                partial(b.measure, scenario, "modelgate (1 worker)", mg, path_mg, body),
            ]
            if scenario == "S1":
                ceiling = up.enter_context(b.ceiling())
                points.append(
                    partial(b.measure, "S1", "ceiling (bare ASGI)", ceiling, "/predict", body)
                )
                # The same row as V2 JSON: no protocol slower than native for one row.
                v2_path, v2_body = "/v2/models/churn/infer", churn_v2_body()
                check_v2(mg, v2_path, v2_body, want, "modelgate V2")
                points.append(partial(b.measure, "S1", V2_SAME_ROW, mg, v2_path, v2_body))
                traced = up.enter_context(b.traced_modelgate(model))
                check(traced, path_mg, body, want, "modelgate, tracing on")
                points.append(partial(b.measure, "S1", TRACED, traced, path_mg, body))
            else:
                # The same positional row to the single and to the batch route: the
                # single route no slower than the batch route for the same row.
                for route, label, path in (
                    ("single", SINGLE_SAME_ROW, path_mg),
                    ("batch", BATCH_SAME_ROW, path_mg + "/batch"),
                ):
                    same_row = mlp_positional(route)
                    status, answer = http(mg + path, same_row.encode())
                    got = answer or {}
                    if route == "batch":
                        got = (got.get("predictions") or [{}])[0]
                    if status != 200 or got.get("prediction") != want["prediction"]:
                        raise RuntimeError(f"modelgate: wrong {route} answer for bench-mlp")
                    points.append(partial(b.measure, "S2", label, mg, path, same_row))
            b.compare(points)


def tracing_ab(b: Bench, expected: dict[str, Any]) -> None:
    """S1's two tracing points alone (``--only T``): modelgate without and with tracing,
    interleaved, for a quick look at the ratio without the rest of S1 and S2."""
    body, path = churn_body(), "/models/churn/predict"
    with b.modelgate("churn") as mg, b.traced_modelgate("churn") as traced:
        check(mg, path, body, expected["churn"], "modelgate")
        check(traced, path, body, expected["churn"], "modelgate, tracing on")
        b.compare(
            [
                partial(b.measure, "S1", "modelgate (1 worker)", mg, path, body),
                partial(b.measure, "S1", TRACED, traced, path, body),
            ]
        )


def s3(b: Bench, expected: dict[str, Any]) -> None:
    rows = 32
    body = mlp_body(rows)
    path = "/models/bench-mlp/predict/batch"
    with b.modelgate("bench-mlp") as url:
        status, answer = http(url + path, body.encode())
        predictions = answer["predictions"] if status == 200 else []
        if len(predictions) != rows or any(
            p["prediction"] != expected["bench-mlp"]["prediction"] for p in predictions
        ):
            raise RuntimeError("modelgate: wrong batch answer for bench-mlp")
        # The same rows as a V2 client with the binary tensor extension sends them
        # (tritonclient's default): no JSON numbers to parse or check one by one.
        v2_path = "/v2/models/bench-mlp/infer"
        v2_body, header_length = v2_binary_body(rows)
        header = f"Inference-Header-Content-Length: {header_length}"
        status, answer = http(
            url + v2_path,
            v2_body,
            headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(header_length),
            },
        )
        labels = next(
            (o["data"] for o in (answer or {}).get("outputs", []) if o["name"] == "prediction"),
            [],
        )
        if status != 200 or labels != [expected["bench-mlp"]["prediction"]] * rows:
            raise RuntimeError("modelgate: wrong V2 binary answer for bench-mlp")
        body_file = BENCH / "out" / "s3-v2-binary.bin"
        body_file.parent.mkdir(parents=True, exist_ok=True)
        body_file.write_bytes(v2_body)
        v2 = "modelgate (1 worker, 32 rows, V2 binary)"
        b.compare(
            [
                partial(b.measure, "S3", "modelgate (1 worker, 32 rows)", url, path, body, rows),
                partial(
                    b.measure, "S3", v2, url, v2_path, "", rows, body_file=body_file, header=header
                ),
                partial(torch_only, b, rows),
            ]
        )


def torch_only(b: Bench, rows: int) -> Result:
    """The model alone on ``rows``-row tensors in a loop, on the servers' core."""
    argv = [
        "taskset",
        "-c",
        SERVER_CPU,
        sys.executable,
        str(BENCH / "torch_ceiling.py"),
        "--model-dir",
        str(b.models / "bench-mlp/1"),
        "--rows",
        str(rows),
        "--seconds",
        str(b.seconds),
    ]
    out = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    print(f"S3   torch only                   {out['rows_per_second']:>10.0f} rows/s", flush=True)
    return Result(
        "S3",
        f"torch only ({rows}-row calls)",
        out["rows_per_second"],
        0,
        0,
        0,
        None,
        rows,
        command=" ".join(argv[3:]),
    )


# The stack as shipped but for two limits a single load generator would hit: the quota
# (still checked in Redis on every request) and the gateway's per-IP flood guard, which
# answers 429 past 10k req/s from one address (after a burst of 20k).
STACK_SETTINGS = {
    "MODELGATE_MODELS": '["churn"]',
    "MODELGATE_RATE_LIMIT__PREDICT": "100000000/minute",
    "MODELGATE_STACK_GATEWAY_REQ_PER_IP": "1000000",
    "MODELGATE_STACK_GATEWAY_REQ_BURST": "1000000",
}
# S6: the ranker alone; a rank request is charged to the batch quota.
RANKING_SETTINGS = {
    **STACK_SETTINGS,
    "MODELGATE_MODELS": '["feed"]',
    "MODELGATE_RATE_LIMIT__BATCH": "100000000/minute",
}


@dataclass(frozen=True)
class NativeStack:
    gateway: str
    redis_url: str  # with the stack's password


@contextmanager
def native_stack(b: Bench, settings: dict[str, str] = STACK_SETTINGS) -> Iterator[NativeStack]:
    d = BENCH / "out" / "stack"
    shutil.rmtree(d, ignore_errors=True)
    ports = {k: free_port() for k in ("gw", "st", "r", "p", "ne", "re")}
    env = {
        **os.environ,
        "MODELGATE_STACK_DIR": str(d),
        "MODELGATE_STACK_GATEWAY_PORT": str(ports["gw"]),
        "MODELGATE_STACK_GATEWAY_STATUS_PORT": str(ports["st"]),
        "MODELGATE_STACK_REPLICA_PORTS": ",".join(str(free_port()) for _ in range(3)),
        "MODELGATE_STACK_REDIS_PORT": str(ports["r"]),
        "MODELGATE_STACK_PROMETHEUS_PORT": str(ports["p"]),
        "MODELGATE_STACK_NGINX_EXPORTER_PORT": str(ports["ne"]),
        "MODELGATE_STACK_REDIS_EXPORTER_PORT": str(ports["re"]),
        "MODELGATE_STACK_GATEWAY_LOG_PORT": str(free_port()),
        "MODELGATE_STACK_GATEWAY_LOG_EXPORTER_PORT": str(free_port()),
        "MODELGATE_STACK_ALERTMANAGER_PORT": str(free_port()),
        **settings,
    }
    cli = [str(VENV_BIN / "modelgate"), "stack"]
    subprocess.run(
        [*cli, "up", "--detach", "--model-repository", str(b.models)],
        env=env,
        check=True,
        capture_output=True,
    )
    from modelgate.settings import Settings
    from modelgate.stack.launch import REDIS_PASSWORD_FILE

    redis_url = Settings(
        redis_url=f"redis://127.0.0.1:{ports['r']}/0", redis_password_file=d / REDIS_PASSWORD_FILE
    ).redis_connection_url
    try:
        yield NativeStack(f"http://127.0.0.1:{ports['gw']}", redis_url)
    finally:
        subprocess.run([*cli, "down"], env=env, check=True, capture_output=True)


def s4_s5(b: Bench, expected: dict[str, Any]) -> None:
    """The stack against the baseline, unpinned. Not up at the same time: the idle stack
    (Prometheus scraping, exporters) costs the unpinned baseline ~10 %. The baseline's
    rounds bracket the stack's instead, half before it starts and half after it stops."""
    body = churn_body()
    path = "/models/churn/predict"
    measure = partial(b.measure, pinned=False)
    baseline: list[Result] = []

    def baseline_rounds(n: int) -> None:
        if n:
            with b.baseline(b.models / "churn/2", cpu=None) as base:
                check(base, "/predict", body, expected["churn"], "baseline")
                for _ in range(n):
                    baseline.append(measure("S4", "baseline (unpinned)", base, "/predict", body))

    baseline_rounds(b.rounds - b.rounds // 2)
    first = len(b.results)
    with native_stack(b) as stack:
        url = stack.gateway
        check(url, path, body, expected["churn"], "modelgate stack")
        b.compare(
            [
                partial(measure, "S4", f"stack, {r:.0%} repeats", url, path, body, repeat=r)
                for r in (0.0, 0.5, 1.0)
            ]
        )
        s5 = partial(measure, "S5", "stack at 1000 req/s offered", url, path, body, rate=1000.0)
        b.compare([s5], by="p99_ms")
    baseline_rounds(b.rounds // 2)
    b.record(baseline, at=first)


S6_ITEMS = 100
# Fewer than the other scenarios' 64: a rank request is ~100 predictions' work, and 16
# in flight already keep both stacks busy (the baseline's requests would otherwise sit
# queued for seconds, and its p50 would measure the queue).
S6_CONNECTIONS = 16
S6_RATE = 150.0  # offered req/s for "more than 100 req/s at p99 under 100 ms"
S6_CONTEXT = {"hour_of_day": 20, "day_of_week": 5, "device": "mobile"}
S6_BASELINE = "baseline (FastAPI, HGETALL per entity, eager torch)"


def rank_body() -> str:
    """The rank request's fixed fields; load.lua puts a random user and items at {RANK}."""
    return "{{RANK}, " + json.dumps({"context": S6_CONTEXT})[1:]


def expected_ranking(version_dir: Path, user: int, items: list[int]) -> list[tuple[int, float]]:
    """The demo ranker's answer, run here with torch on rows built from its CSV files."""
    import numpy as np
    import torch

    manifest = json.loads((version_dir / "model.json").read_text())
    table = {
        e: np.loadtxt(version_dir / "features" / f"{e}.csv", delimiter=",", skiprows=1)[:, 1:]
        for e in ("user", "item")
    }
    devices = next(f["values"] for f in manifest["ranking"]["context"] if f["name"] == "device")
    context = [S6_CONTEXT["hour_of_day"], S6_CONTEXT["day_of_week"]]
    context += [float(d == S6_CONTEXT["device"]) for d in devices]
    rows = np.array([[*table["user"][user], *table["item"][i], *context] for i in items])
    program = torch.export.load(str(version_dir / manifest["file"])).module()
    with torch.no_grad():
        scores = program(torch.tensor(rows, dtype=torch.float32)).reshape(-1).tolist()
    return sorted(zip(items, scores, strict=True), key=lambda p: -p[1])


def check_rank(url: str, want: list[tuple[int, float]], user: int, server_name: str) -> None:
    body = {"user_id": user, "item_ids": [i for i, _ in sorted(want)], "context": S6_CONTEXT}
    status, answer = http(url + "/rank", json.dumps(body).encode())
    got = [(p["item_id"], p["score"]) for p in (answer or {}).get("predictions", [])]
    if status != 200 or len(got) != len(want):
        raise RuntimeError(f"{server_name}: status {status}, {len(got)} items ranked")
    for (gi, gs), (wi, ws) in zip(got, want, strict=True):
        if abs(gs - ws) > 1e-4 or (gi != wi and abs(gs - ws) > 1e-6):
            raise RuntimeError(f"{server_name}: ({gi}, {gs}) where ({wi}, {ws}) was expected")


HASH_PREFIX = "bench:feat"


def write_hashes(client: Any, version_dir: Path) -> None:
    """The ranker's shipped feature files as the baseline reads them: one hash per id,
    ``{HASH_PREFIX}:{entity}:{id}`` → ``{feature: value}``."""
    import csv

    for entity in ("user", "item"):
        with (version_dir / "features" / f"{entity}.csv").open() as f:
            rows = list(csv.DictReader(f))
        pipe = client.pipeline(transaction=False)
        for row in rows:
            pipe.hset(f"{HASH_PREFIX}:{entity}:{row.pop(f'{entity}_id')}", mapping=row)
        pipe.execute()


@contextmanager
def ranking_baseline_stack(model_dir: Path, redis_url: str) -> Iterator[str]:
    """The seed-shaped baseline (bench/servers/ranking_baseline.py) on the stack's layout:
    three gunicorn replicas with uvicorn workers, as many as the stack's, behind nginx
    rendered from the stack's own template, reading the stack's Redis (as hashes)."""
    import redis

    from modelgate.stack.config import StackConfig
    from modelgate.stack.launch import render_gateway, which

    with redis.Redis.from_url(redis_url) as client:
        write_hashes(client, model_dir)
    d = BENCH / "out" / "baseline-stack"
    shutil.rmtree(d, ignore_errors=True)
    (d / "logs").mkdir(parents=True)
    replicas = [free_port() for _ in range(3)]
    config = StackConfig(
        dir=d,
        infra=ROOT / "infra",
        model_repository=model_dir,
        gateway_port=free_port(),
        gateway_status_port=free_port(),
        replica_ports=replicas,
        gateway_log_port=free_port(),  # nobody listens: UDP, nginx doesn't mind
        gateway_req_per_ip=int(STACK_SETTINGS["MODELGATE_STACK_GATEWAY_REQ_PER_IP"]),
        gateway_req_burst=int(STACK_SETTINGS["MODELGATE_STACK_GATEWAY_REQ_BURST"]),
    )
    workers = config.workers  # the cores shared among the replicas, as the stack does
    env = {
        "PYTHONPATH": str(ROOT),
        "BENCH_MODEL_DIR": str(model_dir),
        "BENCH_REDIS_URL": redis_url,
        "BENCH_HASH_PREFIX": HASH_PREFIX,
    }
    with ExitStack() as up:
        for port in replicas:
            argv = [str(VENV_BIN / "gunicorn"), "-k", "uvicorn.workers.UvicornWorker",
                    "-w", str(workers), "--bind", f"127.0.0.1:{port}",
                    "bench.servers.ranking_baseline:app"]  # fmt: skip
            up.enter_context(server(argv, f"http://127.0.0.1:{port}/ready", env, None))
        nginx = [which("nginx"), "-c", str(render_gateway(config, d / "nginx"))]
        up.enter_context(server([*nginx, "-e", str(d / "logs" / "error.log")],
                                f"{config.gateway_url}/ready", {}, None))  # fmt: skip
        yield config.gateway_url


def s6(b: Bench, expected: dict[str, Any]) -> None:
    """Ranking through the gateway: 100 distinct random items of the demo set for a random
    user per request, the stack against the baseline stack, both up (on the one Redis)
    and measured in turn; then the stack alone paced at S6_RATE for its latency."""
    version_dir = b.models / "feed" / "1"
    users, items = (
        len((version_dir / "features" / f"{e}.csv").read_text().splitlines()) - 1
        for e in ("user", "item")
    )
    rank = f"{users},{items},{S6_ITEMS}"
    body = rank_body()
    measure = partial(b.measure, pinned=False, rank=rank, connections=S6_CONNECTIONS)
    want = expected_ranking(version_dir, 7, list(range(0, items, items // S6_ITEMS)))
    with native_stack(b, RANKING_SETTINGS) as stack:
        check_rank(stack.gateway, want, 7, "modelgate stack")
        with ranking_baseline_stack(version_dir, stack.redis_url) as base:
            check_rank(base, want, 7, "baseline stack")
            b.compare(
                [
                    partial(measure, "S6", S6_BASELINE, base, "/rank", body),
                    partial(measure, "S6", "stack (100 items)", stack.gateway, "/rank", body),
                ]
            )
        paced = f"stack at {S6_RATE:g} req/s offered"
        b.compare([partial(measure, "S6", paced, stack.gateway, "/rank", body, rate=S6_RATE)],
                  by="p99_ms")  # fmt: skip


# --- report ---------------------------------------------------------------------------------


def find(results: list[Result], scenario: str, prefix: str) -> Result | None:
    return next(
        (r for r in results if r.scenario == scenario and r.server.startswith(prefix)), None
    )


def ratio(a: Result | None, b: Result | None) -> float | None:
    return a.rps / b.rps if a and b and b.rps else None


def targets(results: list[Result]) -> list[tuple[str, str, bool | None]]:
    def f(x: float | None, fmt: str = "{:.2f}×") -> str:
        return fmt.format(x) if x is not None else "n/a"

    s1 = find(results, "S1", "modelgate")
    s1r = ratio(s1, find(results, "S1", "baseline"))
    s2r = ratio(find(results, "S2", "modelgate"), find(results, "S2", "baseline"))
    s3r = ratio(find(results, "S3", "modelgate"), find(results, "S3", "torch"))
    s3b = ratio(
        find(results, "S3", "modelgate (1 worker, 32 rows, V2"), find(results, "S3", "torch")
    )
    base4 = find(results, "S4", "baseline")
    s4_0 = ratio(find(results, "S4", "stack, 0%"), base4)
    s4_100 = ratio(find(results, "S4", "stack, 100%"), base4)
    s4_errors = sum(r.non_2xx for r in results if r.scenario == "S4")
    s5 = find(results, "S5", "stack")
    v2_native = ratio(find(results, "S1", V2_SAME_ROW), s1)
    s6, base6 = find(results, "S6", "stack (100"), find(results, "S6", "baseline")
    s6r, s6_paced = ratio(s6, base6), find(results, "S6", "stack at")
    single_batch = ratio(find(results, "S2", SINGLE_SAME_ROW), find(results, "S2", BATCH_SAME_ROW))
    traced = ratio(find(results, "S1", TRACED), s1)
    rows = [
        ("S1 ≥ 3× baseline req/s", f(s1r), s1r is not None and s1r >= 3),
        ("S1 p99 ≤ 10 ms", f(s1.p99_ms if s1 else None, "{:.2f} ms"), bool(s1 and s1.p99_ms <= 10)),
        ("S2 ≥ 2× baseline req/s", f(s2r), s2r is not None and s2r >= 2),
        (
            "S1 tracing on (1 % sampled) ≥ 90% of off req/s",
            f(traced, "{:.0%}"),
            traced is not None and traced >= 0.9,
        ),
        (
            "S1 V2 JSON ≥ 85% of native req/s, the same row",
            f(v2_native, "{:.0%}"),
            v2_native is not None and v2_native >= 0.85,
        ),
        (
            "S2 single route ≥ batch route req/s, the same row",
            f(single_batch),
            single_batch is not None and single_batch >= 1.0,
        ),
        (
            "S3 ≥ 90% of torch-only rows/s (native JSON, named features)",
            f(s3r, "{:.0%}"),
            s3r is not None and s3r >= 0.9,
        ),
        (
            "S3 ≥ 90% of torch-only rows/s (V2, binary tensor)",
            f(s3b, "{:.0%}"),
            s3b is not None and s3b >= 0.9,
        ),
        ("S4 ≥ 1.5× unpinned baseline, 0% repeats", f(s4_0), s4_0 is not None and s4_0 >= 1.5),
        ("S4 ≥ 3× unpinned baseline, 100% repeats", f(s4_100), s4_100 is not None and s4_100 >= 3),
        ("S4 0 non-2xx", str(s4_errors), s4_errors == 0),
        (
            "S5 p99 ≤ 10 ms at 1,000 req/s",
            f(s5.p99_ms if s5 else None, "{:.2f} ms"),
            bool(s5 and s5.p99_ms <= 10),
        ),
        ("S6 ≥ 5× baseline req/s (100 items a request)", f(s6r), s6r is not None and s6r >= 5),
        (
            "S6 p99 ≤ baseline p50",
            f"{s6.p99_ms:.1f} ms vs {base6.p50_ms:.1f} ms" if s6 and base6 else "n/a",
            bool(s6 and base6 and s6.p99_ms <= base6.p50_ms),
        ),
        (
            f"S6 > 100 req/s at p99 < 100 ms (offered {S6_RATE:g} req/s)",
            f"{s6_paced.rps:.0f} req/s, p99 {s6_paced.p99_ms:.1f} ms" if s6_paced else "n/a",
            bool(s6_paced and s6_paced.rps > 100 and s6_paced.p99_ms < 100),
        ),
    ]
    return rows


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    import torch

    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "wrk": (wrk_version.splitlines() or ["?"])[0],
    }


def report(b: Bench, argv: list[str]) -> str:
    m = machine()
    lines = [
        "# modelgate benchmark results",
        "",
        f"Command: `{' '.join(argv)}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        f"Machine: {m['cores']} cores, {m['cpu']}, Linux {m['kernel']}; Python {m['python']}, "
        f"torch {m['torch']}, {m['wrk']}.",
        f"Load: wrk, 1 thread, {b.connections} connections, {b.seconds:g} s per point after "
        f"{b.warmup:g} s of warm-up (S6: {S6_CONNECTIONS} connections), script "
        f"`bench/lua/load.lua`. Pinned scenarios (S1–S3): "
        f"server on core {SERVER_CPU}, wrk on core {LOAD_CPU}. S4–S6 unpinned.",
        f"Rounds: the servers of a scenario are up together and measured in turn, "
        f"{b.rounds} round(s); each row is that server's median round (by req/s; by p99 for "
        f"S5), and the last column lists every round's value.",
        "",
        "| scenario | server | req/s (rows/s for S3) | p50 ms | p99 ms | p99.9 ms "
        "| non-2xx (all rounds) | rounds |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in b.results:
        p999 = f"{r.p999_ms:.2f}" if r.p999_ms is not None else ""
        unit = " ms p99" if r.rounds_of == "p99_ms" else ""
        rounds = ", ".join(f"{v:,.2f}" if unit else f"{v:,.0f}" for v in r.rounds) + unit
        lines.append(
            f"| {r.scenario} | {r.server} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {p999} | {r.non_2xx} | {rounds} |"
        )
    lines += ["", "## Ratios", "", "| | ratio |", "|---|---:|"]
    for label, pair in (
        ("S1 modelgate / baseline", ("S1", "modelgate", "baseline")),
        ("S1 modelgate / ceiling", ("S1", "modelgate", "ceiling")),
        ("S2 modelgate / baseline", ("S2", "modelgate", "baseline")),
        ("S1 V2 JSON / native, the same row", ("S1", V2_SAME_ROW, "modelgate")),
        ("S1 tracing on (1 % sampled) / off", ("S1", TRACED, "modelgate")),
        ("S2 single route / batch route, the same row", ("S2", SINGLE_SAME_ROW, BATCH_SAME_ROW)),
        ("S3 modelgate (native JSON) / torch only", ("S3", "modelgate", "torch")),
        (
            "S3 modelgate (V2 binary) / torch only",
            ("S3", "modelgate (1 worker, 32 rows, V2", "torch"),
        ),
        ("S4 stack 0% / baseline", ("S4", "stack, 0%", "baseline")),
        ("S4 stack 50% / baseline", ("S4", "stack, 50%", "baseline")),
        ("S4 stack 100% / baseline", ("S4", "stack, 100%", "baseline")),
        ("S6 stack / baseline (100 items a request)", ("S6", "stack (100", "baseline")),
    ):
        r = ratio(find(b.results, pair[0], pair[1]), find(b.results, pair[0], pair[2]))
        lines.append(f"| {label} | {r:.2f}× |" if r is not None else f"| {label} | n/a |")
    lines += ["", "## Targets", "", "| target | achieved | met |", "|---|---:|:---:|"]
    for label, achieved, met in targets(b.results):
        lines.append(f"| {label} | {achieved} | {'yes' if met else 'no'} |")
    lines += ["", "## Commands", ""]
    lines += [f"- {r.scenario} {r.server}: `{r.command}`" for r in b.results if r.command]
    if any(r.scenario == "S4" for r in b.results):
        settings = " ".join(f"{k}='{v}'" for k, v in STACK_SETTINGS.items())
        lines.append(f"- S4/S5 stack: `{settings} modelgate stack up --detach`")
    if any(r.scenario == "S6" for r in b.results):
        settings = " ".join(f"{k}='{v}'" for k, v in RANKING_SETTINGS.items())
        lines.append(f"- S6 stack: `{settings} modelgate stack up --detach`")
        lines.append(
            "- S6 baseline: 3 × `gunicorn -k uvicorn.workers.UvicornWorker "
            "bench.servers.ranking_baseline:app` behind the stack's nginx template, "
            "on the stack's Redis (features as hashes)"
        )
    return "\n".join(lines) + "\n"


SCENARIOS = {"S1": s1_s2, "S3": s3, "S4": s4_s5, "S6": s6, "T": tracing_ab}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per scenario")
    parser.add_argument(
        "--only",
        default="S1,S3,S4,S6",
        help="S1 (with S2), S3, S4 (with S5), S6; T: S1's tracing points alone",
    )
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args()
    (BENCH / "out").mkdir(exist_ok=True)
    models = BENCH / "out" / "models"
    subprocess.run(
        [sys.executable, str(BENCH / "build_bench_model.py"), "--out", str(models)], check=True
    )
    b = Bench(args.seconds, args.warmup, args.connections, models, args.rounds)
    expected = expected_answers(models)
    for key in args.only.split(","):
        SCENARIOS[key.strip()](b, expected)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "RESULTS.md").write_text(report(b, ["python", "bench/run.py", *sys.argv[1:]]))
    (args.out / "results.json").write_text(
        json.dumps([asdict(r) for r in b.results], indent=2) + "\n"
    )
    print((args.out / "RESULTS.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
