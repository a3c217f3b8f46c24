"""``/metrics`` for Prometheus and ``/stats``, the same numbers as a JSON summary.

``/metrics`` and ``/stats/replica`` cover every worker of this replica (multiprocess
mode), whichever worker answers. ``/stats`` covers the whole fleet, read from Prometheus
(fleetstats.py), when the replica is told where it is (``MODELGATE_STATS__PROMETHEUS_URL``:
compose and the native stack do); a replica alone is its own fleet and answers its own.
The gateway does not serve ``/metrics``; Prometheus scrapes each replica directly.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from fastapi import APIRouter, Request
from starlette.responses import Response

from modelgate.edge.deps import LifecycleDep, SettingsDep, json_response
from modelgate.errors import error_response
from modelgate.observability.drift import replica_scores
from modelgate.observability.fleetstats import FleetStatsUnavailable, fleet_stats
from modelgate.observability.metrics import (
    buckets_of,
    collect,
    exposition,
    histogram_quantile,
    sample_sum,
)

router = APIRouter(tags=["observability"])

HTTP_REQUESTS = "http_requests_total"
HTTP_DURATION = "http_request_duration_seconds"
RATE_WINDOW_S = 60.0


# Merging every worker's metric files takes milliseconds (tens under load): in a thread,
# so the event loop keeps answering requests meanwhile instead of stalling per scrape.


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    request.app.state.metrics.flush()  # this worker's sums; the others flush on their own
    body, content_type = await asyncio.to_thread(exposition, request.app.state.metrics.registry)
    return Response(body, media_type=content_type)


@router.get("/stats")
async def stats(request: Request, settings: SettingsDep, lifecycle: LifecycleDep) -> Response:
    """Requests, rate, latency percentiles, error rate and cache hit ratio of the whole
    fleet, from Prometheus, since each replica started (the rate over the last minute);
    503 if Prometheus does not answer. Without a Prometheus configured: this replica's."""
    url = settings.stats.prometheus_url
    if not url:
        return json_response(await _replica_stats(request, settings, lifecycle))
    try:
        return json_response(await fleet_stats(url, settings.stats.timeout_seconds))
    except FleetStatsUnavailable as exc:
        message = f"the fleet's numbers are unavailable: Prometheus did not answer ({exc})"
        return error_response(503, "unavailable", message)


@router.get("/stats/replica")
async def replica_stats(
    request: Request, settings: SettingsDep, lifecycle: LifecycleDep
) -> Response:
    """The same summary for the replica that answers (``instance`` names it)."""
    return json_response(await _replica_stats(request, settings, lifecycle))


async def _replica_stats(
    request: Request, settings: SettingsDep, lifecycle: LifecycleDep
) -> dict[str, object]:
    """This replica since it started (the rate over the last minute of /stats calls)."""
    request.app.state.metrics.flush()
    families = await asyncio.to_thread(collect, request.app.state.metrics.registry)
    total = sample_sum(families, HTTP_REQUESTS)
    server_errors = sample_sum(families, HTTP_REQUESTS, status="5xx")
    client_errors = sample_sum(families, HTTP_REQUESTS, status="4xx")
    # Latency of the API itself: leave out the probes and scrapes that poll it.
    latency = buckets_of(families, HTTP_DURATION, handler={"/metrics", "/stats", "/stats/replica"})
    p50 = histogram_quantile(0.50, latency)
    p99 = histogram_quantile(0.99, latency)
    hits = sample_sum(families, "modelgate_cache_requests_total", result="hit")
    lookups = sample_sum(families, "modelgate_cache_requests_total")

    # Requests per second: against this worker's earlier /stats answers, within a minute;
    # the first time, since this worker started.
    history: deque[tuple[float, float]] = request.app.state.stats_history
    now = time.monotonic()
    while history and now - history[0][0] > RATE_WINDOW_S:
        history.popleft()
    if history and now > history[0][0]:
        rps = (total - history[0][1]) / (now - history[0][0])
    else:
        rps = total / max(lifecycle.uptime_seconds(), 1e-3)
    history.append((now, total))

    return {
        "scope": "replica",
        "instance": settings.instance,
        "requests_total": int(total),
        "requests_per_second": round(rps, 3),
        "latency_p50_ms": round(p50 * 1000, 3) if p50 is not None else None,
        "latency_p99_ms": round(p99 * 1000, 3) if p99 is not None else None,
        "error_rate": round(server_errors / total, 6) if total else 0.0,
        "client_error_rate": round(client_errors / total, 6) if total else 0.0,
        "predictions_total": int(sample_sum(families, "modelgate_predictions_total")),
        "cache_hit_ratio": round(hits / lookups, 6) if lookups else None,
        "rate_limited_total": int(sample_sum(families, "modelgate_rate_limited_requests_total")),
        # Since this replica started; the fleet's (/stats) is over the last 30 minutes.
        "feature_drift_psi": replica_scores(families),
    }
