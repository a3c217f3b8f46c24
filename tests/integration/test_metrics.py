"""Metrics of a real replica with two workers: one scrape sums every worker."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_until
from tests.integration.test_api import CHURN

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(p) for p in children]


def test_one_scrape_counts_every_worker_and_survives_a_dead_one(
    demo_models: Path, replica_factory: Any
) -> None:
    s = replica_factory(demo_models, workers=2)
    n = 40
    for _ in range(n):  # fresh connections: both workers take requests
        assert httpx.post(f"{s.url}/predict", json={"features": CHURN}).status_code == 200
    bad = httpx.post(f"{s.url}/predict", json={"features": {"age": "x"}})
    assert bad.status_code == 422

    # A worker writes its sums 5 ms after it goes idle: the scrape may come first.
    def counted() -> bool:
        nonlocal samples
        samples = scrape(s.url)
        ok = value(samples, "http_requests_total", handler="/predict", status="2xx") == n
        return ok and value(samples, "http_requests_total", handler="/predict", status="4xx") == 1

    samples = scrape(s.url)
    wait_until(counted, 5, "every request counted")
    assert value(samples, "http_request_duration_seconds_count", handler="/predict") == n + 1
    assert value(samples, "modelgate_predictions_total", model="churn", version="2") == n
    assert value(samples, "modelgate_batch_size_rows_count", model="churn", version="2") >= 1
    assert value(samples, "modelgate_inference_duration_seconds_count", model="churn") >= 1
    assert value(samples, "modelgate_queue_wait_seconds_count", model="churn") == n
    # Two workers, one model-info series per served version, max over workers: 1.
    assert value(samples, "modelgate_model_info", model="churn", version="2", default="true") == 1
    assert value(samples, "modelgate_model_loads_total", model="churn", result="success") == 4
    # Requests in flight: only this scrape itself, whichever worker took it.
    assert value(samples, "modelgate_http_requests_in_flight") == 1

    stats = httpx.get(f"{s.url}/stats").json()
    assert stats["predictions_total"] == n
    assert stats["requests_total"] >= n + 1
    assert 0 < stats["latency_p50_ms"] <= stats["latency_p99_ms"]
    assert stats["error_rate"] == 0.0 and stats["client_error_rate"] > 0

    # A worker dies; gunicorn replaces it. Its counts stay, its live gauges go.
    victim = worker_pids(s.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: victim not in worker_pids(s.proc.pid) and len(worker_pids(s.proc.pid)) == 2,
        30,
        "replacement worker",
    )
    wait_until(lambda: httpx.get(f"{s.url}/ready").status_code == 200, 30, "ready again")
    after = scrape(s.url)
    assert value(after, "http_requests_total", handler="/predict", status="2xx") == n
    assert value(after, "modelgate_http_requests_in_flight") == 1
    assert value(after, "modelgate_model_info", model="churn", version="2") == 1
