"""Through the gateway of the whole native stack: what a client and an operator see."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.stack.conftest import ADMIN_KEY, PREDICT_LIMIT, Stack

pytestmark = pytest.mark.stack

CHURN = [35, 75000, 680, 24, 730, 85.5, 2, False, 2, 3]


def test_status_reports_every_process_ready(stack: Stack) -> None:
    status = stack.cli("status")
    assert status.returncode == 0, status.stdout
    lines = status.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == [
        *("redis", "redis-exporter", "api-1", "api-2", "api-3", "gateway-log-exporter"),
        *("gateway", "nginx-exporter", "alertmanager", "prometheus", "supervisor"),
    ]
    assert all(" ready " in line for line in lines)


def test_prediction_through_the_gateway_with_the_request_id_end_to_end(stack: Stack) -> None:
    rid = f"stack-{uuid.uuid4().hex[:12]}"
    with stack.client() as c:
        r = c.post("/predict", json={"features": CHURN}, headers={"X-Request-ID": rid})
        assert r.status_code == 200
        body = r.json()
        assert body["model_name"] == "churn" and 0 <= body["probability"] <= 1
        assert r.headers.get_list("x-request-id") == [rid]  # echoed exactly once
        batch = c.post("/models/iris/predict/batch", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
        assert batch.json()["predictions"][0]["class_name"] == "setosa"
        # Without an id, the gateway makes one, and the replica answers with it.
        assert len(c.get("/ready").headers["x-request-id"]) == 32

    # The replica that served it logged the same id.
    upstream = stack.upstream_of(rid)
    port = upstream.rsplit(":", 1)[1]
    replica = [u for u in stack.replicas if u.endswith(f":{port}")]
    assert replica, upstream
    name = f"api-{stack.replicas.index(replica[0]) + 1}"
    log = stack.dir / "logs" / f"{name}.log"
    # Access lines are written in batches, within 50 ms.
    wait_until(lambda: rid in log.read_text(), 5, f"the request id in {name}'s access log")


def test_a_miss_on_one_replica_is_a_hit_on_another(stack: Stack) -> None:
    features = [35, 75077, *CHURN[2:]]  # an input no other test sends
    seen: list[tuple[str, str]] = []  # (cache, upstream)
    with stack.client() as c:
        for _ in range(6):
            rid = uuid.uuid4().hex
            r = c.post("/predict", json={"features": features}, headers={"X-Request-ID": rid})
            assert r.status_code == 200
            seen.append((r.headers["x-cache"], stack.upstream_of(rid)))
            if len({u for _, u in seen}) > 1 and seen[-1][0] == "HIT":
                break
    assert seen[0][0] == "MISS"
    first_replica = seen[0][1]
    hits_elsewhere = [u for cache, u in seen if cache == "HIT" and u != first_replica]
    assert hits_elsewhere, seen


def test_the_quota_is_exact_across_the_fleet(stack: Stack) -> None:
    extra = 10
    client_ip = "127.0.0.7"  # this test's own client: nobody else spends its quota

    def call(i: int) -> tuple[int, str]:
        rid = f"quota-{i}-{uuid.uuid4().hex[:8]}"
        with stack.client(client_ip) as c:  # fresh connections: spread over replicas
            r = c.post("/predict", json={"features": CHURN}, headers={"X-Request-ID": rid})
        return r.status_code, rid

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(PREDICT_LIMIT + extra)))
    codes = [code for code, _ in results]
    assert codes.count(200) == PREDICT_LIMIT and codes.count(429) == extra
    served_by = {stack.upstream_of(rid) for code, rid in results if code == 200}
    assert len(served_by) == 3  # one quota, counted by three replicas

    with stack.client(client_ip) as c:
        denied = c.post("/predict", json={"features": CHURN})
    assert denied.status_code == 429 and denied.json()["error"] == "rate_limited"
    assert int(denied.headers["retry-after"]) >= 1
    assert denied.headers["x-ratelimit-limit"] == str(PREDICT_LIMIT)
    # Another address has its own quota.
    with stack.client("127.0.0.8") as c:
        assert c.post("/predict", json={"features": CHURN}).status_code == 200


def fleet_versions(c: httpx.Client) -> list[Any]:
    return [w["default_version"] for w in c.get("/models/churn").json()["fleet"]]


def test_a_reload_through_the_gateway_converges_on_every_worker(stack: Stack) -> None:
    admin = {"X-API-Key": ADMIN_KEY}
    with stack.client("127.0.0.9") as c:
        assert fleet_versions(c) == ["2"] * 6  # 3 replicas x 2 workers
        assert c.post("/admin/models/churn/load", json={"version": "1"}).status_code == 401
        r = c.post("/admin/models/churn/load", json={"version": "1"}, headers=admin)
        assert r.status_code == 200 and r.json()["propagated"] is True, r.text
        try:
            wait_until(lambda: fleet_versions(c) == ["1"] * 6, 15, "fleet on v1")
            versions = {
                c.post("/predict", json={"features": CHURN}).json()["model_version"]
                for _ in range(12)
            }
            assert versions == {"1"}
        finally:
            c.post("/admin/models/churn/load", json={"version": "2"}, headers=admin)
            wait_until(lambda: fleet_versions(c) == ["2"] * 6, 15, "fleet back on v2")


def test_gateway_keeps_metrics_private_and_errors_json(stack: Stack) -> None:
    with stack.client() as c:
        metrics = c.get("/metrics")
        assert metrics.status_code == 404 and metrics.json()["error"] == "not_found"
        big = c.post("/predict", content=b"x" * (5 * 1024 * 1024))
        assert big.status_code == 413 and big.json()["error"] == "payload_too_large"
        bad = c.post("/predict", json={"features": {"age": "old"}})
        assert bad.status_code == 422 and bad.json()["field"].startswith("features")
