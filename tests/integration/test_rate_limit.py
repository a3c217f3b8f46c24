"""The shared rate limiter on real replicas (2 workers each) and a real redis-server."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelgate.ratelimit import PREDICT_SCOPE, Quotas, Verdict
from modelgate.settings import RateLimitSettings
from tests.conftest import RedisServer, commandstats, stop_process
from tests.integration.test_api import CHURN

pytestmark = pytest.mark.integration


def limit_env(
    redis_url: str, predict: str = "10/minute", batch: str = "3/minute"
) -> dict[str, str]:
    return {
        "MODELGATE_REDIS_URL": redis_url,
        "MODELGATE_RATE_LIMIT__ENABLED": "true",
        "MODELGATE_RATE_LIMIT__PREDICT": predict,
        "MODELGATE_RATE_LIMIT__BATCH": batch,
    }


def test_quota_is_exact_across_replicas_and_workers(
    demo_models: Path, replica_factory: Any, redis_server: RedisServer
) -> None:
    env = limit_env(redis_server.url)
    replicas = [replica_factory(demo_models, workers=2, env=env) for _ in range(2)]
    answers = []
    # Fresh connections each time, so both workers of both replicas take requests, and
    # the three single-prediction paths share one quota.
    paths = ["/predict", "/models/churn/predict", "/models/churn/versions/1/predict"]
    for i in range(14):
        url = replicas[i % 2].url + paths[i % 3]
        answers.append(httpx.post(url, json={"features": CHURN}))
    ok = [a for a in answers if a.status_code == 200]
    limited = [a for a in answers if a.status_code == 429]
    assert len(ok) == 10 and len(limited) == 4
    # The count lives in Redis, so every answer's "remaining" is exact whoever served it.
    assert sorted(int(a.headers["x-ratelimit-remaining"]) for a in ok) == list(range(10))
    assert all(a.headers["x-ratelimit-limit"] == "10" for a in answers)

    denied = limited[0]
    body = denied.json()
    assert body["error"] == "rate_limited" and "10 per 1 minute" in body["message"]
    assert body["request_id"] == denied.headers["x-request-id"]
    assert 1 <= int(denied.headers["retry-after"]) <= 61
    assert "retry-after" not in ok[0].headers
    assert int(ok[0].headers["x-ratelimit-reset"]) > time.time()
    assert denied.headers["x-ratelimit-remaining"] == "0"

    # Batch routes have their own quota, and other clients theirs.
    rows = {"instances": [CHURN, CHURN]}
    assert httpx.post(f"{replicas[0].url}/predict/batch", json=rows).status_code == 200
    other = httpx.post(
        f"{replicas[1].url}/predict", json={"features": CHURN}, headers={"X-API-Key": "k2"}
    )
    assert other.status_code == 200 and other.headers["x-ratelimit-remaining"] == "9"


def test_quota_belongs_to_the_api_key_not_the_address(
    demo_models: Path, replica_factory: Any, redis_server: RedisServer
) -> None:
    keys = ["alice-key", "bob-key"]
    digests = ",".join(f'"{hashlib.sha256(k.encode()).hexdigest()}"' for k in keys)
    env = {
        **limit_env(redis_server.url, predict="2/minute"),
        "MODELGATE_AUTH__API_KEY_SHA256": f"[{digests}]",
    }
    s = replica_factory(demo_models, workers=1, env=env)

    def call(key: str) -> int:
        headers = {"X-API-Key": key}
        return httpx.post(f"{s.url}/predict", json={"features": CHURN}, headers=headers).status_code

    assert [call("alice-key") for _ in range(3)] == [200, 200, 429]
    assert [call("bob-key") for _ in range(3)] == [200, 200, 429]
    # A wrong key is refused before it can spend anyone's quota.
    assert call("mallory-key") == 403


def test_redis_gone_falls_back_to_per_worker_limits(
    demo_models: Path, replica_factory: Any, redis_server: RedisServer
) -> None:
    s = replica_factory(demo_models, workers=1, env=limit_env(redis_server.url, predict="5/minute"))
    assert httpx.post(f"{s.url}/predict", json={"features": CHURN}).status_code == 200
    stop_process(redis_server.proc)
    # The in-memory fallback starts a fresh window: 5 more, then the quota still holds.
    codes = [httpx.post(f"{s.url}/predict", json={"features": CHURN}).status_code for _ in range(7)]
    assert codes == [200] * 5 + [429] * 2
    assert "Traceback" not in s.log()
    assert httpx.get(f"{s.url}/ready").status_code == 200


def test_checks_of_one_event_loop_turn_share_one_round_trip(redis_server: RedisServer) -> None:
    quotas = Quotas(RateLimitSettings(enabled=True, predict="15/minute"), redis_server.url)

    async def burst() -> tuple[list[Verdict], dict[str, Any]]:
        verdicts = await asyncio.gather(
            *(quotas.check("ip:10.0.0.7", PREDICT_SCOPE) for _ in range(20))
        )
        stats = commandstats(redis_server.url)
        await quotas.close()
        return verdicts, stats

    verdicts, stats = asyncio.run(burst())
    # One script call for the twenty checks (plus SCRIPT LOAD after the first NOSCRIPT).
    calls = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    assert calls <= 2
    # …and still exact: each check saw its own count.
    assert [v.allowed for v in verdicts].count(True) == 15
    assert sorted(v.remaining for v in verdicts if v.allowed) == list(range(15))
