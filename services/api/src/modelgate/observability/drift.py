"""Input drift: the training data's distribution per input (the manifest's ``reference``),
the served rows counted into the same bins, and the population stability index.

* At export time ``reference_of`` bins one training column: quantile edges for a
  continuous input (about ``BINS`` bins of equal training share), one bin per value for a
  bool or a code with few values. The manifest keeps the edges and the training share
  per bin (manifest.Reference).
* Served rows are kept by the worker's metrics (``Metrics.count_features``: one list
  append per request) and, at each flush (every 5-100 ms), ``InputHistogram.count`` puts
  all of a version's rows into those bins for every referenced input at once, in a few
  numpy calls; the counts go to ``modelgate_feature_bin_total`` (metrics.py).
* The score is the PSI of the served shares against the training shares,
  ``sum((live - ref) * ln(live / ref))`` over the bins, each share floored at
  ``SHARE_FLOOR`` so that an empty bin scores high instead of infinite. It is computed by
  Prometheus (infra/prometheus/rules/recording.yml, ``modelgate_feature_drift_psi``) over
  the whole fleet's counts of the last 30 minutes; ``psi`` here is the same formula, for
  a replica's own counts (``/stats/replica``) and the tests. Usual reading: under 0.1 no
  drift, 0.1-0.25 moderate, over 0.25 major.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client.metrics_core import Metric

from modelgate.inference.manifest import FeatureReference, Manifest, Reference

BINS = 10
# A column with at most this many distinct values gets one bin per value (bools, codes).
MAX_VALUE_BINS = 20
SHARE_FLOOR = 1e-4
# Up to this many rows InputHistogram compares with every edge at once; past it, it
# searches per input (measured crossover: 64-256 rows, see InputHistogram).
BROADCAST_ROWS = 64
# Fewer served rows than this and the PSI is mostly sampling noise (its expected value
# without any drift is about (bins - 1) / rows): no score. The recording rule agrees.
MIN_ROWS = 200


def reference_of(column: np.ndarray, bins: int = BINS) -> FeatureReference:
    """The reference bins of one training column (float32, as served rows are)."""
    values = np.asarray(column, dtype=np.float32)
    distinct = np.unique(values)
    if len(distinct) <= MAX_VALUE_BINS:
        # Halfway between neighbouring values: every value its own bin.
        edges = (distinct[:-1].astype(np.float64) + distinct[1:]) / 2
    else:
        # Training values themselves (no interpolation): exact in float32, as served.
        quantiles = np.quantile(values, np.arange(1, bins) / bins, method="lower")
        edges = np.unique(quantiles).astype(np.float64)
        edges = edges[edges > distinct[0]]  # an edge at the minimum would make an empty bin
    counts = np.bincount(bin_index(values, edges), minlength=len(edges) + 1)
    shares = _normalised(counts)
    return FeatureReference(edges=[float(e) for e in edges], shares=shares)


def reference_from_rows(
    rows: np.ndarray, names: Sequence[str], source: str, bins: int = BINS
) -> Reference:
    """A manifest's ``reference`` from training rows (one column per input, in order)."""
    features = {name: reference_of(rows[:, i], bins) for i, name in enumerate(names)}
    return Reference(rows=len(rows), source=source, features=features)


def bin_index(values: np.ndarray, edges: np.ndarray | Sequence[float]) -> np.ndarray:
    """Bin of each value: the number of edges at or below it."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")


def _normalised(counts: np.ndarray) -> list[float]:
    """Shares that sum to 1 exactly enough for the manifest check (rounded to 6 places,
    the rounding error put on the largest bin)."""
    shares = [round(float(c) / float(counts.sum()), 6) for c in counts]
    largest = int(np.argmax(counts))
    shares[largest] = round(shares[largest] + 1 - math.fsum(shares), 6)
    return shares


def psi(reference: Sequence[float], counts: Sequence[float]) -> float | None:
    """Population stability index of ``counts`` (served rows per bin) against the
    reference shares; None with fewer than ``MIN_ROWS`` rows."""
    total = float(sum(counts))
    if total < MIN_ROWS:
        return None
    score = 0.0
    for ref, n in zip(reference, counts, strict=True):
        live = max(n / total, SHARE_FLOOR)
        expected = max(ref, SHARE_FLOOR)
        score += (live - expected) * math.log(live / expected)
    return score


# /stats's drift entry: model → version → input → PSI (rounded).
Scores = dict[str, dict[str, dict[str, float]]]


def nest(scores: Iterable[tuple[str, str, str, float]]) -> Scores:
    """``(model, version, feature, psi)`` as /stats shows them."""
    out: Scores = {}
    for model, version, feature, score in sorted(scores):
        out.setdefault(model, {}).setdefault(version, {})[feature] = round(score, 4)
    return out


def replica_scores(families: Iterable[Metric]) -> Scores:
    """The PSI per input of the rows this replica served since it started (its metric
    families as a scrape reads them), for ``/stats/replica``."""
    counts: dict[tuple[str, str, str], dict[int, float]] = {}
    shares: dict[tuple[str, str, str], dict[int, float]] = {}
    for family in families:
        for sample in family.samples:
            into = (
                counts
                if sample.name == "modelgate_feature_bin_total"
                else shares
                if sample.name == "modelgate_feature_reference_share"
                else None
            )
            if into is not None:
                labels = sample.labels
                key = (labels["model"], labels["version"], labels["feature"])
                bins = into.setdefault(key, {})
                bins[int(labels["bin"])] = bins.get(int(labels["bin"]), 0.0) + sample.value
    scored = []
    for key, reference in shares.items():
        served = counts.get(key, {})
        order = sorted(reference)
        score = psi([reference[b] for b in order], [served.get(b, 0.0) for b in order])
        if score is not None:
            scored.append((*key, score))
    return nest(scored)


@dataclass(frozen=True)
class FeatureBins:
    """One referenced input, as the metrics label it."""

    feature: str
    shares: tuple[float, ...]


class InputHistogram:
    """Counts rows of one model version into its reference bins, every feature at once.

    The bins of all referenced inputs are numbered one after the other (``features``, in
    input order), so one batch becomes one vector of counts. A value's bin is the number
    of its input's edges at or below it. For a few rows (a quiet worker's flush) that is
    one broadcast comparison over rows × inputs × edges padded with +inf, ~12 µs for
    churn's 10 inputs on the bench machine where a searchsorted per input costs ~55 µs;
    past ``BROADCAST_ROWS`` rows the comparisons cost more than the calls, and each input
    gets its own searchsorted (1000 rows: ~0.25 ms instead of ~0.8 ms).
    """

    def __init__(self, manifest: Manifest) -> None:
        reference = manifest.reference
        if reference is None:
            raise ValueError(f"{manifest.name} {manifest.version} has no reference")
        names = manifest.input_names
        refs = [(names.index(name), name, spec) for name, spec in reference.features.items()]
        refs.sort()
        width = max(len(spec.edges) for _, _, spec in refs) or 1
        self.columns = np.array([i for i, _, _ in refs], dtype=np.intp)
        self.edges = np.full((len(refs), width), np.inf)
        for row, (_, _, spec) in enumerate(refs):
            self.edges[row, : len(spec.edges)] = spec.edges
        sizes = [len(spec.shares) for _, _, spec in refs]
        self.offsets = np.cumsum([0, *sizes[:-1]]).astype(np.intp)
        self.size = sum(sizes)
        self.features = [FeatureBins(name, tuple(spec.shares)) for _, name, spec in refs]
        self._each = [
            (column, np.array(spec.edges, dtype=np.float64), len(spec.shares))
            for column, _, spec in refs
        ]

    def count(self, rows: np.ndarray) -> np.ndarray:
        """Rows per bin (int64, ``size`` long) of validated rows ``(n, inputs)``."""
        if len(rows) <= BROADCAST_ROWS:
            index = (rows[:, self.columns, None] >= self.edges).sum(axis=2) + self.offsets
            return np.bincount(index.ravel(), minlength=self.size)
        return np.concatenate(
            [
                np.bincount(bin_index(rows[:, column], edges), minlength=bins)
                for column, edges, bins in self._each
            ]
        )
