"""Prometheus metrics, correct with several gunicorn workers per replica.

gunicorn.conf.py points ``PROMETHEUS_MULTIPROC_DIR`` at a directory of this replica,
emptied when the master starts and cleaned of each dead worker's live gauges, so one
scrape of ``/metrics`` reports the sum over every worker of the replica. Without that
variable (a test client, a single process) the app's own registry is exposed.

HTTP metrics (``http_requests_total`` and ``http_request_duration_seconds`` by route
template, method and status class — the names and labels of
prometheus-fastapi-instrumentator, so dashboards written for it work) come from
``Metrics.observe_http``, called by the edge middleware: the instrumentator builds a Request and
a Response and matches the route again for every request, about 70 µs of a ~300 µs
request on this machine. modelgate adds what only it knows: inference time and queue
wait per model version, batch sizes, cache results, quota refusals, model loads, the
versions served, and served inputs per reference bin (input drift, drift.py). Labels
are bounded: model and version come from the repository, never from a request path;
feature and bin from the manifest (at most 32 bins an input).

The per-request updates (HTTP count and latency, predictions, queue waits, cache lookups,
requests in flight) are summed in plain Python and written to the shared values by
``flush``: 5 ms after the worker last went idle, at least every 100 ms under load, and
before a scrape. In multiprocess mode each update is a locked write to a memory-mapped
file, and a prediction made about a dozen of them (~13 µs, a tenth of a single
prediction's cost); summed, a request costs a few dictionary updates and a flush a few
writes per label set. The 5 ms matter: answering cache hits in the stack, a worker goes
idle every other request or so, and flushing at once each time cost it ~9 % of its
throughput. A scrape sees every request that has finished, up to 5 ms late while the
worker is idle and 100 ms while it is busy.
"""

from __future__ import annotations

import asyncio
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics_core import Metric

from modelgate.observability.drift import FeatureBins, InputHistogram

# Millisecond-scale serving: 0.5 ms … 10 s.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
FLUSH_INTERVAL_S = 0.1  # while the worker is busy
IDLE_FLUSH_S = 0.005  # after it goes idle


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


# In multiprocess mode prometheus_client calls os.getpid() on every update, to notice a
# fork. A few dozen updates per request make that a syscall storm; the pid only changes
# at a fork, so it is cached and refreshed in the child. Chosen before any metric exists.
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


def _cached_pid() -> int:
    return _pid


if values.ValueClass is not values.MutexValue:
    os.register_at_fork(after_in_child=_refresh_pid)
    values.ValueClass = values.MultiProcessValue(process_identifier=_cached_pid)  # type: ignore[no-untyped-call]


class Metrics:
    """modelgate's own metrics, registered in ``registry`` (one per app)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        mv = ["model", "version"]
        self.inference = Histogram(
            "modelgate_inference_duration_seconds",
            "Time of one tensor call (a batch), and of its hand-off to the inference thread.",
            mv, buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "modelgate_queue_wait_seconds",
            "Time a request's rows waited for their batch to start.",
            mv, buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "modelgate_batch_size_rows", "Rows per tensor call.",
            mv, buckets=BATCH_BUCKETS, registry=registry,
        )  # fmt: skip
        self.predictions = Counter(
            "modelgate_predictions", "Rows predicted (answered), by whether from the cache.",
            [*mv, "cached"], registry=registry,
        )  # fmt: skip
        self.cache = Counter(
            "modelgate_cache_requests",
            "Cache lookups per row: hit, miss, or error (Redis failed or the breaker is open).",
            ["result"], registry=registry,
        )  # fmt: skip
        self.rate_limited = Counter(
            "modelgate_rate_limited_requests", "Requests refused by a quota.",
            ["scope"], registry=registry,
        )  # fmt: skip
        self.model_loads = Counter(
            "modelgate_model_loads", "Model version loads, at start and on reload.",
            ["model", "result"], registry=registry,
        )  # fmt: skip
        self.model_info = Gauge(
            "modelgate_model_info",
            "1 for each model version this replica serves; default says which one answers.",
            ["model", "version", "sha256", "default"],
            multiprocess_mode="livemax", registry=registry,
        )  # fmt: skip
        self.prediction_log = Counter(
            "modelgate_prediction_log_records",
            "Prediction-log records: written, dropped (queue full) or failed (I/O error).",
            ["result"], registry=registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "modelgate_http_requests_in_flight", "HTTP requests being served.",
            multiprocess_mode="livesum", registry=registry,
        )  # fmt: skip
        http = ["handler", "method", "status"]
        self.http_requests = Counter(
            "http_requests_total", "HTTP requests by route template, method and status class.",
            http, registry=registry,
        )  # fmt: skip
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by route template, method and status class.",
            http, buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        # Ranking (protocols/ranking.py): items scored per request, the feature store's
        # lookups per id and the time of its one round trip.
        self.ranked_items = Histogram(
            "modelgate_rank_items", "Items scored per rank request.",
            mv, buckets=BATCH_BUCKETS, registry=registry,
        )  # fmt: skip
        self.feature_lookups = Counter(
            "modelgate_feature_lookups",
            "Feature-store lookups per id: hit, or default (unknown id, cold-start values).",
            ["entity", "result"], registry=registry,
        )  # fmt: skip
        self.feature_fetch = Histogram(
            "modelgate_feature_fetch_seconds",
            "Time of a rank request's one feature-store round trip (user and items).",
            ["feature_set"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        # Input drift (drift.py): served rows per reference bin, and the training share
        # of each bin, from the manifest. Prometheus turns both into the PSI per feature
        # (recording.yml): over every replica's counts, which no replica alone has.
        drift = [*mv, "feature", "bin"]
        self.feature_bins = Counter(
            "modelgate_feature_bin", "Served input rows per feature and reference bin.",
            drift, registry=registry,
        )  # fmt: skip
        self.feature_reference = Gauge(
            "modelgate_feature_reference_share",
            "Share of the training rows in each reference bin (the manifest's reference).",
            drift, multiprocess_mode="livemax", registry=registry,
        )  # fmt: skip
        # (model, version) → the bins' counter children, in InputHistogram's order; and
        # the rows served since the last flush, per histogram, binned at the flush.
        self._feature_series: dict[tuple[str, str], list[Any]] = {}
        self._feature_rows: dict[InputHistogram, tuple[str, str, list[np.ndarray]]] = {}
        self._info_labels: set[tuple[str, str, str, str]] = set()
        # labels() takes a lock and hashes the tuple; per-request children are cached here.
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._tally = _Tally()
        # (route, method, status) → its counter and histogram children, once looked up.
        self._http_series: dict[tuple[str | None, str, int], tuple[Any, Any]] = {}
        self.clock: Callable[[], float] = time.monotonic
        self._flushed_at = self.clock()
        self._idle_flush: asyncio.TimerHandle | None = None
        # Requests in flight in this worker, for the gauge (the edge middleware counts them).
        self.in_flight_now: Callable[[], int] = lambda: 0
        # Present at 0 from the start, so that rates and ratios exist before the first event.
        for result in ("hit", "miss", "error"):
            self.cache.labels(result)
        for scope in ("predict", "batch"):
            self.rate_limited.labels(scope)
        for entity in ("user", "item"):
            for result in ("hit", "default"):
                self.feature_lookups.labels(entity, result)

    def observe_batch(
        self, model: str, version: str, rows: int, seconds: float, waits: Iterable[float]
    ) -> None:
        tally = self._tally
        tally.observe(self._child(self.inference, model, version), LATENCY_BUCKETS, seconds)
        tally.observe(self._child(self.batch_size, model, version), BATCH_BUCKETS, rows)
        wait = self._child(self.queue_wait, model, version)
        for w in waits:
            tally.observe(wait, LATENCY_BUCKETS, w)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def count_predictions(self, model: str, version: str, rows: int, computed: int) -> None:
        """``rows`` answered, ``computed`` of them by the model, the rest from the cache."""
        if computed:
            self._tally.inc(self._child(self.predictions, model, version, "false"), computed)
        if rows > computed:
            self._tally.inc(self._child(self.predictions, model, version, "true"), rows - computed)

    def count_cache(self, result: str, rows: int) -> None:
        """Cache lookups of ``rows`` rows: ``hit``, ``miss`` or ``error``."""
        self._tally.inc(self._child(self.cache, result), rows)

    def count_feature_lookups(self, entity: str, result: str, ids: int) -> None:
        """``ids`` lookups of ``entity`` features: ``hit`` or ``default`` (the store's hook)."""
        self._tally.inc(self._child(self.feature_lookups, entity, result), ids)

    def observe_rank(
        self, model: str, version: str, feature_set: str, items: int, fetch_s: float
    ) -> None:
        """One rank request: its items and its feature fetch."""
        tally = self._tally
        tally.observe(self._child(self.ranked_items, model, version), BATCH_BUCKETS, items)
        tally.observe(self._child(self.feature_fetch, feature_set), LATENCY_BUCKETS, fetch_s)

    def track_features(self, model: str, version: str, features: list[FeatureBins]) -> None:
        """Publish a served version's reference shares and create its bin counters at 0
        (at load, before any row: a counter that first appears at n loses those n in
        Prometheus's ``increase``). ``features`` in InputHistogram's order."""
        series = []
        for f in features:
            for b, share in enumerate(f.shares):
                labels = (model, version, f.feature, str(b))
                self.feature_reference.labels(*labels).set(share)
                series.append(self.feature_bins.labels(*labels))
        self._feature_series[(model, version)] = series

    def count_features(
        self, model: str, version: str, histogram: InputHistogram, rows: np.ndarray
    ) -> None:
        """Served rows to count into ``histogram``'s bins. Kept (not copied: validated
        rows are not changed after the prediction) until the flush bins them all at once:
        a few numpy calls per flush instead of per request, where they cost ~12 µs of a
        ~250 µs single-row request (bench/DRIFT.md)."""
        pending = self._feature_rows.get(histogram)
        if pending is None:
            self._feature_rows[histogram] = (model, version, [rows])
        else:
            pending[2].append(rows)

    def _write_features(self) -> None:
        pending, self._feature_rows = self._feature_rows, {}
        for histogram, (model, version, batches) in pending.items():
            series = self._feature_series.get((model, version))
            if series is None or len(series) != histogram.size:
                continue  # reloaded since with other bins: these rows are not theirs
            rows = batches[0] if len(batches) == 1 else np.concatenate(batches)
            counts = histogram.count(rows)
            for i in np.flatnonzero(counts).tolist():
                series[i].inc(int(counts[i]))

    def observe_http(self, route: str | None, method: str, status: int, seconds: float) -> None:
        """One request: ``route`` is the matched route template, ``None`` for unknown paths
        (labelled ``none``, so labels stay bounded). Scrapes of /metrics are left out: they
        would drown the API's own numbers."""
        key = (route, method, status)
        series = self._http_series.get(key)
        if series is None:
            handler = route or "none"
            if handler == "/metrics":
                return
            labels = (handler, method, f"{status // 100}xx")
            series = self._http_series[key] = (
                self._child(self.http_requests, *labels),
                self._child(self.http_duration, *labels),
            )
        self._tally.inc(series[0])
        self._tally.observe(series[1], LATENCY_BUCKETS, seconds)

    def request_done(self, in_flight: int) -> None:
        """Called as each request ends (on the event loop): write the sums out when the
        last write is ``FLUSH_INTERVAL_S`` old, else ``IDLE_FLUSH_S`` after the worker
        goes idle."""
        if self.clock() - self._flushed_at >= FLUSH_INTERVAL_S:
            self.flush()
        elif in_flight == 0 and self._idle_flush is None:
            self._idle_flush = asyncio.get_running_loop().call_later(IDLE_FLUSH_S, self.flush)

    def flush(self) -> None:
        """Write what was summed since the last flush, and the requests in flight now."""
        if self._idle_flush is not None:
            self._idle_flush.cancel()
            self._idle_flush = None
        self._flushed_at = self.clock()
        self._tally.write()
        if self._feature_rows:
            self._write_features()
        self.in_flight.set(self.in_flight_now())

    def served(self, versions: Iterable[tuple[str, str, str, bool]]) -> None:
        """Set the model-info gauge to what is loaded now: (model, version, sha256, default)."""
        now = {(m, v, sha[:12], "true" if d else "false") for m, v, sha, d in versions}
        for labels in self._info_labels - now:
            self.model_info.labels(*labels).set(0)
        for labels in now:
            self.model_info.labels(*labels).set(1)
        self._info_labels = now


class _Tally:
    """Counter increments and histogram observations, summed until ``write``.

    Written through the children's own values, as ``Counter.inc`` and
    ``Histogram.observe`` do (``_sum``, ``_buckets``: prometheus_client's attributes,
    checked against ``observe`` itself by tests/unit/test_metrics.py).
    """

    def __init__(self) -> None:
        self.counts: dict[Any, float] = {}
        # histogram child → [sum, count per bucket (the last one is +Inf)]
        self.histograms: dict[Any, list[Any]] = {}

    def inc(self, counter: Any, amount: float = 1) -> None:
        self.counts[counter] = self.counts.get(counter, 0) + amount

    def observe(self, histogram: Any, bounds: tuple[float, ...], value: float) -> None:
        entry = self.histograms.get(histogram)
        if entry is None:
            entry = self.histograms[histogram] = [0.0, [0] * (len(bounds) + 1)]
        entry[0] += value
        entry[1][bisect_left(bounds, value)] += 1  # the first bucket with value <= bound

    def write(self) -> None:
        counts, self.counts = self.counts, {}
        histograms, self.histograms = self.histograms, {}
        for counter, amount in counts.items():
            counter.inc(amount)
        for histogram, (total, buckets) in histograms.items():
            histogram._sum.inc(total)
            for value, n in zip(histogram._buckets, buckets, strict=True):
                if n:
                    value.inc(n)


def scraped(registry: CollectorRegistry) -> CollectorRegistry:
    """What a scrape reads: every worker's values merged in multiprocess mode, else the
    app's own registry."""
    if not multiprocess_dir():
        return registry
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
    return merged


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text a scrape gets."""
    return generate_latest(scraped(registry)), CONTENT_TYPE_LATEST


def collect(registry: CollectorRegistry) -> list[Metric]:
    """The metric families a scrape would get, for /stats."""
    return list(scraped(registry).collect())


def sample_sum(families: list[Metric], name: str, **match: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``match``."""
    total = 0.0
    for family in families:
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in match.items()):
                total += s.value
    return total


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's ``histogram_quantile`` over cumulative bucket counts (le → count)."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total == 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            span = count - prev_count
            return prev_bound + (bound - prev_bound) * ((rank - prev_count) / span if span else 0)
        prev_bound, prev_count = bound, count
    return prev_bound


def buckets_of(families: list[Metric], name: str, **exclude: Any) -> dict[float, float]:
    """Cumulative bucket counts of histogram ``name``, summed over label sets, leaving out
    samples whose label ``k`` is in ``exclude[k]``."""
    out: dict[float, float] = {}
    for family in families:
        for s in family.samples:
            if s.name != f"{name}_bucket":
                continue
            if any(s.labels.get(k) in v for k, v in exclude.items()):
                continue
            le = float(s.labels["le"])
            out[le] = out.get(le, 0.0) + s.value
    return out
