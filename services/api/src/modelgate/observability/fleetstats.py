"""The whole fleet's ``/stats``, from the Prometheus that scrapes every replica.

One replica knows only its own counters, and the gateway hands ``/stats`` to any replica;
Prometheus holds every replica's (and the gateway's own answers, through its log exporter). The
summary has the fields of a replica's (routes/observability.py) with the same meaning:
totals, ratios and latency percentiles since each replica started, the request rate over
the last minute. Each value is one instant query, all sent at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import httpx

from modelgate.observability.drift import nest

API = 'job="modelgate-api"'
# Probes and scrapes that poll the replicas are not the API's latency (as per replica).
NOT_POLLING = 'handler!~"/metrics|/stats|/stats/replica"'
GATEWAY = 'job="gateway"'

# Name in the answer -> PromQL. Sums over every replica; an empty result means no series
# yet (no request of that kind since the replicas started).
QUERIES: dict[str, str] = {
    "requests_total": f"sum(http_requests_total{{{API}}})",
    "requests_per_second": f"sum(rate(http_requests_total{{{API}}}[1m]))",
    "server_errors": f'sum(http_requests_total{{{API}, status="5xx"}})',
    "client_errors": f'sum(http_requests_total{{{API}, status="4xx"}})',
    "latency_p50": "histogram_quantile(0.50, sum by (le) "
    f"(http_request_duration_seconds_bucket{{{API}, {NOT_POLLING}}}))",
    "latency_p99": "histogram_quantile(0.99, sum by (le) "
    f"(http_request_duration_seconds_bucket{{{API}, {NOT_POLLING}}}))",
    "predictions_total": f"sum(modelgate_predictions_total{{{API}}})",
    "cache_hits": f'sum(modelgate_cache_requests_total{{{API}, result="hit"}})',
    "cache_lookups": f"sum(modelgate_cache_requests_total{{{API}}})",
    "rate_limited_total": f"sum(modelgate_rate_limited_requests_total{{{API}}})",
    "gateway_answers": f"sum(modelgate_gateway_responses_total{{{GATEWAY}}})",
    "gateway_5xx": f'sum(modelgate_gateway_responses_total{{{GATEWAY}, status=~"5.."}})',
}
# The drift score per model version and input (recording.yml): a vector, kept as it is.
DRIFT = "modelgate_feature_drift_psi"
# Per scrape target: is it up, and how many requests has it served.
PER_REPLICA: dict[str, str] = {
    "up": f"up{{{API}}}",
    "requests_total": f"sum by (instance) (http_requests_total{{{API}}})",
}


class FleetStatsUnavailable(RuntimeError):
    """Prometheus could not be asked, or did not answer as its API says it does."""


async def _query(client: httpx.AsyncClient, expr: str, at: float) -> list[dict[str, Any]]:
    try:
        r = await client.get("/api/v1/query", params={"query": expr, "time": f"{at:.3f}"})
        body = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise FleetStatsUnavailable(f"{type(exc).__name__}: {exc}") from None
    if r.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
        raise FleetStatsUnavailable(f"HTTP {r.status_code}: {str(body)[:200]}")
    data = body.get("data")
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, list):
        raise FleetStatsUnavailable("no result list in the answer")
    return result


def _value(sample: dict[str, Any]) -> float | None:
    """A sample's value; None for NaN (e.g. a quantile over no request)."""
    try:
        value = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise FleetStatsUnavailable(f"malformed sample {str(sample)[:200]}") from None
    return None if math.isnan(value) else value


def _scalar(result: list[dict[str, Any]]) -> float | None:
    return _value(result[0]) if result else None


def _ratio(part: float | None, whole: float | None, empty: float | None) -> float | None:
    return round((part or 0.0) / whole, 6) if whole else empty


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 3) if seconds is not None else None


async def fleet_stats(prometheus_url: str, timeout_s: float) -> dict[str, Any]:
    """The summary over every replica Prometheus scrapes; FleetStatsUnavailable if
    Prometheus does not answer in ``timeout_s``."""
    async with httpx.AsyncClient(base_url=prometheus_url, timeout=timeout_s) as client:
        names = [*QUERIES, *(f"replica:{k}" for k in PER_REPLICA), DRIFT]
        exprs = [*QUERIES.values(), *PER_REPLICA.values(), DRIFT]
        # One evaluation time for every query, so that the numbers agree with each other.
        at = time.time()
        results = await asyncio.gather(*(_query(client, e, at) for e in exprs))
    answers = dict(zip(names, results, strict=True))
    v = {name: _scalar(answers[name]) for name in QUERIES}

    replicas: dict[str, dict[str, Any]] = {}
    for sample in answers["replica:up"]:
        target = str(sample.get("metric", {}).get("instance", ""))
        replicas[target] = {"target": target, "up": _value(sample) == 1, "requests_total": 0}
    for sample in answers["replica:requests_total"]:
        target = str(sample.get("metric", {}).get("instance", ""))
        entry = replicas.setdefault(target, {"target": target, "up": False})
        entry["requests_total"] = int(_value(sample) or 0)

    total = v["requests_total"]
    return {
        "scope": "fleet",
        "replicas_up": sum(1 for r in replicas.values() if r["up"]),
        "replicas_total": len(replicas),
        "requests_total": int(total or 0),
        "requests_per_second": round(v["requests_per_second"] or 0.0, 3),
        "latency_p50_ms": _ms(v["latency_p50"]),
        "latency_p99_ms": _ms(v["latency_p99"]),
        "error_rate": _ratio(v["server_errors"], total, 0.0),
        "client_error_rate": _ratio(v["client_errors"], total, 0.0),
        "predictions_total": int(v["predictions_total"] or 0),
        "cache_hit_ratio": _ratio(v["cache_hits"], v["cache_lookups"], None),
        "rate_limited_total": int(v["rate_limited_total"] or 0),
        # What clients saw at the gateway, nginx's own answers (502 with no replica up)
        # included: the one error rate that is not blind when every replica is down.
        "gateway_requests_total": int(v["gateway_answers"] or 0),
        "gateway_error_rate": _ratio(v["gateway_5xx"], v["gateway_answers"], 0.0),
        "replicas": sorted(replicas.values(), key=lambda r: str(r["target"])),
        "feature_drift_psi": nest(_drift(answers[DRIFT])),
    }


def _drift(result: list[dict[str, Any]]) -> list[tuple[str, str, str, float]]:
    out = []
    for sample in result:
        labels = sample.get("metric", {})
        value = _value(sample)
        if value is not None:
            out.append((labels.get("model", ""), labels.get("version", ""),
                        labels.get("feature", ""), value))  # fmt: skip
    return out
