"""A/B of two checkouts' modelgate on the same scenarios, interleaved A,B,A,B in one run.

    .venv/bin/python bench/ab.py A_SRC B_SRC [--seconds 10 --warmup 3 --rounds 3]

A_SRC and B_SRC are the ``services/api/src`` of two checkouts (e.g. one made with
``git worktree add /tmp/base <commit>``); each server runs with that directory first on
PYTHONPATH, so both use this venv's packages. The harness is bench/run.py's (wrk and
bench/lua/load.lua, server on core 1, wrk on core 0); each point is its median round.
Prints B/A per point: S1's row native and as V2 JSON (churn), S2's named row, the same
positional row on the single and the batch route, S3's 32 named rows (bench-mlp).

One checkout with a setting on and off: give the same directory twice and the setting
to one side, e.g. ``--a-env MODELGATE_DRIFT__ENABLED=false`` (``--model churn`` runs
only that model's points).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a_src", type=Path)
    parser.add_argument("b_src", type=Path)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=run.BENCH / "out" / "ab.json")
    for side in ("a", "b"):
        parser.add_argument(
            f"--{side}-env",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help=f"environment of the {side.upper()} servers only (repeatable)",
        )
    parser.add_argument("--model", help="only this model's points (churn or bench-mlp)")
    args = parser.parse_args()
    side_env = {
        "A": dict(item.split("=", 1) for item in args.a_env),
        "B": dict(item.split("=", 1) for item in args.b_env),
    }
    (run.BENCH / "out").mkdir(exist_ok=True)
    # Each side's models come from its own checkout's script and package, so a manifest
    # field one side adds (drift's `reference`) never reaches a side that refuses it.
    models: dict[Path, Path] = {}
    for side, src in (("a", args.a_src), ("b", args.b_src)):
        out = run.BENCH / "out" / f"ab-models-{side}"
        script = src.resolve().parents[2] / "bench" / "build_bench_model.py"
        subprocess.run(
            [sys.executable, str(script), "--out", str(out)],
            check=True,
            env={**os.environ, "PYTHONPATH": str(src)},
        )
        models[src] = out
    b = run.Bench(args.seconds, args.warmup, 64, models[args.b_src], args.rounds)

    @contextmanager
    def modelgate(model: str, src: Path, env: dict[str, str]) -> Iterator[str]:
        changes = {"PYTHONPATH": str(src), **env}
        before = {name: os.environ.get(name) for name in changes}
        os.environ.update(changes)
        b.models = models[src]
        try:
            with b.modelgate(model) as url:
                yield url
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    groups = (
        ("churn", [
            ("S1 native", "/models/churn/predict", run.churn_body(), 1),
            ("S1 V2 JSON, same row", "/v2/models/churn/infer", run.churn_v2_body(), 1),
        ]),
        ("bench-mlp", [
            ("S2 native, named row", "/models/bench-mlp/predict", run.mlp_body(), 1),
            ("S2 single route, positional row", "/models/bench-mlp/predict",
             run.mlp_positional("single"), 1),
            ("S2 batch route, same row", "/models/bench-mlp/predict/batch",
             run.mlp_positional("batch"), 1),
            ("S3 32 named rows", "/models/bench-mlp/predict/batch", run.mlp_body(32), 32),
        ]),
    )  # fmt: skip
    for model, cases in groups:
        if args.model and model != args.model:
            continue
        with ExitStack() as up:
            urls = {
                "A": up.enter_context(modelgate(model, args.a_src, side_env["A"])),
                "B": up.enter_context(modelgate(model, args.b_src, side_env["B"])),
            }
            b.compare(
                [
                    partial(b.measure, label[:2], f"{side} {label}", urls[side], path, body, rows)
                    for label, path, body, rows in cases
                    for side in ("A", "B")
                ]
            )
    # Written first: the measurements outlive any trouble in the summary below.
    args.out.write_text(json.dumps([vars(r) for r in b.results], indent=1) + "\n")
    results = {r.server: r for r in b.results}
    lines = []
    for name, a in results.items():
        if name.startswith("A "):
            label, other = name[2:], results["B " + name[2:]]
            # Round i of A and of B ran back to back: their ratio cancels what the
            # machine did over minutes, which the medians of each side do not.
            # A round that served nothing (a crashed server) has no ratio: left out.
            paired = [y / x for x, y in zip(a.rounds, other.rounds, strict=True) if x and y]
            geo = math.exp(statistics.fmean(math.log(r) for r in paired)) if paired else 0.0
            lines.append(
                f"{label:<34} A {a.rps:>8.0f}/s  B {other.rps:>8.0f}/s  B/A "
                f"{other.rps / a.rps if a.rps else 0:.3f}  paired {geo:.3f} "
                f"[{min(paired, default=0):.2f}–{max(paired, default=0):.2f}]  "
                f"rounds A {a.rounds} B {other.rounds}"
            )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
