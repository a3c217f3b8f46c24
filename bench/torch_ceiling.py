"""The torch-only ceiling for S3: the model called on fixed-size batches in a loop, one
thread, for N seconds; prints rows per second."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    manifest = json.loads((args.model_dir / "model.json").read_text())
    model = torch.export.load(str(args.model_dir / manifest["file"])).module()
    torch.set_num_threads(1)
    x = torch.rand(args.rows, len(manifest["inputs"]))
    with torch.no_grad():
        for _ in range(20):
            model(x)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < args.seconds:
            model(x)
            calls += 1
    elapsed = time.perf_counter() - started
    print(json.dumps({"rows_per_second": calls * args.rows / elapsed, "calls": calls}))


if __name__ == "__main__":
    main()
