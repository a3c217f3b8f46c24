"""``/stats`` through the gateway covers the whole fleet (from Prometheus); each replica
still tells its own at ``/stats/replica``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.stack.conftest import Stack

pytestmark = pytest.mark.stack


def test_stats_through_the_gateway_add_up_every_replica(stack: Stack) -> None:
    with stack.client("127.0.0.41") as c:
        # churn (test_dashboards counts iris exactly), inputs no other test sends, with
        # repeats: cache hits.
        for i in range(12):
            row = [35, 76100 + i % 4, 680, 24, 730, 85.5, 2, False, 2, 3]
            assert c.post("/models/churn/predict", json={"features": row}).status_code == 200

        def replicas() -> list[dict[str, Any]]:
            return [httpx.get(f"{url}/stats/replica", timeout=10).json() for url in stack.replicas]

        fleet: dict[str, Any] = {}

        def caught_up() -> bool:
            # No prediction runs meanwhile, so the totals settle once Prometheus has
            # scraped every replica after the last one.
            fleet.update(c.get("/stats").json())
            own = sum(r["predictions_total"] for r in replicas())
            per_target = sum(r["requests_total"] for r in fleet["replicas"])
            return bool(fleet["predictions_total"] == own and per_target == fleet["requests_total"])

        wait_until(caught_up, 60, "the fleet's predictions equal the replicas' sum")

    each = replicas()
    assert {r["scope"] for r in each} == {"replica"}
    assert sorted(r["instance"] for r in each) == ["api-1", "api-2", "api-3"]
    assert fleet["scope"] == "fleet"
    assert fleet["replicas_up"] == fleet["replicas_total"] == 3
    assert [r["up"] for r in fleet["replicas"]] == [True] * 3
    # Every replica has served something by now, so the fleet is more than any one.
    assert fleet["requests_total"] > max(r["requests_total"] for r in fleet["replicas"])
    assert fleet["predictions_total"] >= 12
    assert 0 < fleet["cache_hit_ratio"] <= 1
    assert 0 < fleet["latency_p50_ms"] <= fleet["latency_p99_ms"]
    assert 0 <= fleet["error_rate"] < 1 and 0 <= fleet["client_error_rate"] < 1
    assert fleet["requests_per_second"] >= 0
    assert fleet["gateway_requests_total"] >= 12 and 0 <= fleet["gateway_error_rate"] < 1
