"""Proven panels: known traffic through the gateway, then every Grafana panel query and
every recording rule — read from the files compose mounts — run against the stack's real
Prometheus. Each must return data, and the request counters must add up exactly."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import yaml

from modelgate.observability.drift import MIN_ROWS
from tests.conftest import ROOT, wait_until
from tests.stack.conftest import Stack
from tests.stack.drift_traffic import (
    CHURN_V1_BATCH,
    as_instances,
    counters_scraped,
    training_rows,
)

pytestmark = pytest.mark.stack

SINGLE = "/models/{name}/versions/{version}/predict"  # used by no other stack test
BATCH = "/models/{name}/versions/{version}/predict/batch"
BATCH_LIMIT = 60  # the stack fixture's MODELGATE_RATE_LIMIT__BATCH
RANK = "/models/{name}/versions/{version}/rank"  # used by no other stack test
RANKED = 5


def query(stack: Stack, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{stack.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]  # type: ignore[no-any-return]


def scalar(stack: Stack, expr: str) -> float | None:
    result = query(stack, expr)
    return float(result[0]["value"][1]) if result else None


def dashboard_queries() -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / "infra/grafana/dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{path.stem}: {panel['title']}", target["expr"]))
    return out


def recorded_series() -> list[str]:
    rules = yaml.safe_load((ROOT / "infra/prometheus/rules/recording.yml").read_text())
    return [r["record"] for g in rules["groups"] for r in g["rules"]]


def test_every_panel_and_rule_has_data_and_the_counts_add_up(stack: Stack) -> None:
    sent_single = sent_batch = 0
    codes: list[int] = []
    with stack.client("127.0.0.31") as c:
        # 30 predictions over 10 distinct inputs: the repeats can hit the cache.
        for i in range(30):
            row = [5.1, 3.5, 1.4, round(0.2 + (i % 10) / 100, 2)]
            codes.append(
                c.post("/models/iris/versions/1/predict", json={"features": row}).status_code
            )
        for _ in range(5):  # invalid input
            codes.append(
                c.post("/models/iris/versions/1/predict", json={"features": [1]}).status_code
            )
        for _ in range(2):  # unknown version
            codes.append(
                c.post(
                    "/models/iris/versions/9/predict", json={"features": [1, 2, 3, 4]}
                ).status_code
            )
        sent_single = len(codes)
    assert codes.count(200) == 30 and codes.count(422) == 5 and codes.count(404) == 2

    batch_codes = []
    with stack.client("127.0.0.32") as c:  # one more than the batch quota
        for _ in range(BATCH_LIMIT + 1):
            r = c.post(
                "/models/iris/versions/1/predict/batch", json={"instances": [[5.0, 3.0, 1.0, 0.5]]}
            )
            batch_codes.append(r.status_code)
        sent_batch = len(batch_codes)
    assert batch_codes.count(200) == BATCH_LIMIT and batch_codes.count(429) == 1

    # The ranking row: the demo ranker, its features loaded by `stack up`; one item id
    # the store doesn't know, so the default-feature ratio has both results to divide.
    context = {"hour_of_day": 9, "day_of_week": 1, "device": "tablet"}
    with stack.client("127.0.0.33") as c:
        rank_codes = [
            c.post(
                "/models/feed/versions/1/rank",
                json={"user_id": u, "item_ids": [u, u + 1, 10**9], "context": context},
            ).status_code
            for u in range(RANKED)
        ]
    assert rank_codes == [200] * RANKED

    # Enough rows like churn's training data for a drift score (drift.MIN_ROWS).
    counters_scraped(stack)
    with stack.client("127.0.0.33") as c:
        body = {"instances": as_instances(training_rows(MIN_ROWS + 100, seed=5))}
        assert c.post(CHURN_V1_BATCH, json=body).status_code == 200

    # Prometheus has the exact totals once it has scraped all three replicas again.
    def total(handler: str, status: str = "") -> float | None:
        match = f'job="modelgate-api", handler="{handler}"' + (
            f', status="{status}"' if status else ""
        )
        return scalar(stack, f"sum(http_requests_total{{{match}}})")

    wait_until(lambda: total(SINGLE) == sent_single, 60, "single-prediction count scraped")
    wait_until(lambda: total(BATCH) == sent_batch, 60, "batch count scraped")
    wait_until(lambda: total(RANK, "2xx") == RANKED, 60, "rank count scraped")
    items = scalar(stack, 'sum(modelgate_rank_items_sum{model="feed", version="1"})')
    assert items is not None and items >= 3 * RANKED
    assert total(SINGLE, "2xx") == 30 and total(SINGLE, "4xx") == 7
    assert total(BATCH, "4xx") == 1
    served = query(stack, f'sum by (instance) (http_requests_total{{handler="{SINGLE}"}})')
    assert len(served) >= 2  # the gateway spread them: counted on several replicas
    assert scalar(stack, 'sum(modelgate_rate_limited_requests_total{scope="batch"})') == 1
    hits = scalar(stack, 'sum(modelgate_predictions_total{model="iris", cached="true"})')
    misses = scalar(stack, 'sum(modelgate_predictions_total{model="iris", cached="false"})')
    assert hits is not None and misses is not None and hits > 0
    assert hits + misses == 30 + BATCH_LIMIT

    # The gateway counted them too, as answers passed on from the replicas (with the
    # other tests' traffic on this stack: at least these).
    def at_gateway(status: int) -> float:
        match = f'job="gateway", answered_by="replica", status="{status}"'
        return scalar(stack, f"sum(modelgate_gateway_responses_total{{{match}}})") or 0.0

    wait_until(lambda: at_gateway(422) >= 5 and at_gateway(429) >= 1, 60, "gateway counts")
    assert at_gateway(200) >= 30 + BATCH_LIMIT and at_gateway(404) >= 2

    # Every recording rule and every panel query returns data (rules are evaluated every
    # 5 s and rates need two scrapes, so give them a little while, all together).
    pending = [(name, name) for name in recorded_series()] + dashboard_queries()

    def all_have_data() -> bool:
        pending[:] = [(title, expr) for title, expr in pending if not query(stack, expr)]
        return not pending

    try:
        wait_until(all_have_data, 60, "data for every panel and rule")
    except TimeoutError:
        pytest.fail("no data for:\n" + "\n".join(f"{t}: {e}" for t, e in pending))
