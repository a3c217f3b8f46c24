"""What input-drift counting adds to one request, in-process (no server, no network).

    .venv/bin/python bench/drift_cost.py [--models models]

Times what ``MODELGATE_DRIFT__ENABLED`` adds for churn's 10 inputs: per request
(``Metrics.count_features``, which keeps the rows) and per flush (every 5-100 ms: the
rows kept since the last one binned by ``InputHistogram.count`` and written to the
counters), for flushes holding 1, 32 and 400 single-row requests (400: a busy worker's
100 ms), with prometheus_client's multiprocess values as a replica runs them. Also
``InputHistogram.count`` of one row alone: what binning in the request would cost.
Best of 5 repeats each. Read next to bench/ab.py's A/B of the same setting
(bench/DRIFT.md): this one is steady on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as metrics_dir:
        # Before prometheus_client is imported: the replica's value class.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        from prometheus_client import CollectorRegistry

        from modelgate.inference.manifest import read_manifest
        from modelgate.observability.drift import InputHistogram
        from modelgate.observability.metrics import Metrics

        manifest = read_manifest(args.models / "churn" / "1")
        assert manifest.reference is not None, "make models first (a manifest with a reference)"
        histogram = InputHistogram(manifest)
        metrics = Metrics(CollectorRegistry())
        metrics.track_features("churn", "1", histogram.features)
        rng = np.random.default_rng(0)
        edges = [f.edges for f in manifest.reference.features.values()]
        rows = [
            np.array(
                [[rng.uniform(e[0] - 1, e[-1] + 1) if e else 0.0 for e in edges]],
                dtype=np.float32,
            )
            for _ in range(400)
        ]

        def best(fn: Callable[[], object], number: int) -> float:
            return min(timeit.repeat(fn, number=number, repeat=5)) / number

        def flush_of(requests: int) -> float:
            def one() -> None:
                for row in rows[:requests]:
                    metrics.count_features("churn", "1", histogram, row)
                metrics.flush()

            return best(one, 200)

        per_request = best(lambda: metrics.count_features("churn", "1", histogram, rows[0]), 20000)
        metrics.flush()
        in_request = best(lambda: histogram.count(rows[0]), 20000)
        flushes = {n: flush_of(n) for n in (1, 32, 400)}
    print(f"churn, {len(histogram.features)} inputs, {histogram.size} bins")
    print(f"per request (keep the rows):          {per_request * 1e6:7.2f} µs")
    for n, seconds in flushes.items():
        print(f"per flush of {n:>3} requests (bin, write): {seconds * 1e6:7.1f} µs"
              f" = {seconds / n * 1e6:6.2f} µs a request")  # fmt: skip
    print(f"binning one row in the request instead: {in_request * 1e6:7.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
