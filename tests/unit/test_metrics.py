"""Per-request metrics are summed and written in one go: the result must be exactly what
prometheus_client's own ``inc`` and ``observe`` would have produced."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from modelgate.observability.metrics import IDLE_FLUSH_S, LATENCY_BUCKETS, Metrics

ROUTE = "/models/{name}/predict"
# Values on bucket bounds, between them, below the first and beyond the last.
LATENCIES = [0.0, 0.0001, 0.0005, 0.004, 0.005, 0.0051, 0.3, 10.0, 12.5, *LATENCY_BUCKETS]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_summed_updates_write_what_direct_updates_would() -> None:
    summed = Metrics(CollectorRegistry())
    direct = Metrics(CollectorRegistry())
    for i, seconds in enumerate(LATENCIES):
        status = 200 if i % 3 else 422
        summed.observe_http(ROUTE, "POST", status, seconds)
        labels = (ROUTE, "POST", f"{status // 100}xx")
        direct.http_requests.labels(*labels).inc()
        direct.http_duration.labels(*labels).observe(seconds)
    summed.count_predictions("churn", "2", rows=5, computed=3)
    direct.predictions.labels("churn", "2", "false").inc(3)
    direct.predictions.labels("churn", "2", "true").inc(2)
    summed.count_cache("hit", 4)
    direct.cache.labels("hit").inc(4)
    for rows in (1, 3, 64, 2000):
        summed.observe_batch("churn", "2", rows, 0.002, [0.001, 0.01])
        direct.inference.labels("churn", "2").observe(0.002)
        direct.batch_size.labels("churn", "2").observe(rows)
        for wait in (0.001, 0.01):
            direct.queue_wait.labels("churn", "2").observe(wait)

    before = samples(summed.registry)
    assert (
        before[("http_requests_total", (("handler", ROUTE), ("method", "POST"), ("status", "2xx")))]
        == 0
    )
    summed.flush()
    assert samples(summed.registry) == samples(direct.registry)


def test_sums_are_written_soon_after_the_worker_goes_idle_or_every_interval() -> None:
    metrics = Metrics(CollectorRegistry())
    in_flight = 3
    metrics.in_flight_now = lambda: in_flight
    now = [1000.0]
    metrics.clock = lambda: now[0]
    metrics.flush()

    def count() -> float:
        key = ("http_requests_total", (("handler", ROUTE), ("method", "POST"), ("status", "2xx")))
        return samples(metrics.registry).get(key, 0.0)

    async def run() -> None:
        nonlocal in_flight
        metrics.observe_http(ROUTE, "POST", 200, 0.001)
        metrics.request_done(in_flight=2)  # busy, flushed just now: summed only
        assert count() == 0
        now[0] += 0.1
        metrics.request_done(in_flight=2)  # busy, but the interval is up
        assert count() == 1
        assert samples(metrics.registry)[("modelgate_http_requests_in_flight", ())] == 3

        metrics.observe_http(ROUTE, "POST", 200, 0.001)
        in_flight = 0
        metrics.request_done(in_flight=0)  # idle: written IDLE_FLUSH_S later, not at once
        metrics.observe_http(ROUTE, "POST", 200, 0.001)
        metrics.request_done(in_flight=0)  # idle again before that: the same write
        assert count() == 1
        deadline = asyncio.get_running_loop().time() + 5
        while count() != 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(IDLE_FLUSH_S / 5)  # polling interval
        assert count() == 3
        assert samples(metrics.registry)[("modelgate_http_requests_in_flight", ())] == 0

    asyncio.run(run())
