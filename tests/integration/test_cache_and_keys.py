"""The Redis prediction cache and API keys on real replicas and a real redis-server."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from modelgate.shared.rediscache import RedisCache
from tests.conftest import RedisServer, commandstats, stop_process, wait_until
from tests.integration.test_api import CHURN

pytestmark = pytest.mark.integration


def cache_env(redis_server: RedisServer, **extra: str) -> dict[str, str]:
    return {"MODELGATE_REDIS_URL": redis_server.url, "MODELGATE_CACHE__ENABLED": "true", **extra}


def test_hit_across_replicas_with_canonical_inputs(
    demo_models: Path, replica_factory: Any, redis_server: RedisServer
) -> None:
    a = replica_factory(demo_models, workers=1, env=cache_env(redis_server))
    b = replica_factory(demo_models, workers=1, env=cache_env(redis_server))
    first = httpx.post(f"{a.url}/predict", json={"features": CHURN})
    assert first.headers["x-cache"] == "MISS" and first.json()["cached"] is False

    # Same instance, other key order, ints written as floats, other replica.
    reordered = {
        k: (float(v) if isinstance(v, int) and not isinstance(v, bool) else v)
        for k, v in reversed(CHURN.items())
    }
    r = redis.Redis(port=redis_server.port)
    wait_until(lambda: r.keys("pred:*"), 5, "cache write after the response")
    second = httpx.post(f"{b.url}/predict", json={"features": reordered})
    assert second.headers["x-cache"] == "HIT" and second.json()["cached"] is True
    assert second.json()["probability"] == first.json()["probability"]

    [key] = r.keys("pred:*")
    sha = httpx.get(f"{a.url}/model/info").json()["sha256"]
    assert key.decode().startswith(f"pred:churn:2:{sha[:12]}:")
    assert orjson.loads(r.get(key))["probability"] == first.json()["probability"]
    assert 0 < r.ttl(key) <= 3600

    # A different version never answers from this entry.
    v1 = httpx.post(f"{b.url}/models/churn/versions/1/predict", json={"features": CHURN})
    assert v1.headers["x-cache"] == "MISS"


def test_batch_mixes_hits_and_misses_in_order(
    demo_models: Path, replica_factory: Any, redis_server: RedisServer
) -> None:
    s = replica_factory(demo_models, workers=1, env=cache_env(redis_server))
    rows = [{**CHURN, "num_purchases": i} for i in range(4)]
    warm = httpx.post(f"{s.url}/predict/batch", json={"instances": rows[:2]}).json()
    r = redis.Redis(port=redis_server.port)
    wait_until(lambda: len(r.keys("pred:*")) >= 2, 5, "cache writes after the response")
    body = httpx.post(f"{s.url}/predict/batch", json={"instances": rows}).json()
    assert [p["cached"] for p in body["predictions"]] == [True, True, False, False]
    assert [p["probability"] for p in body["predictions"][:2]] == [
        p["probability"] for p in warm["predictions"]
    ]


def test_redis_dying_mid_run_costs_nothing_but_the_cache(
    demo_models: Path, replica_factory: Any, redis_server: RedisServer
) -> None:
    s = replica_factory(demo_models, workers=1, env=cache_env(redis_server))
    assert httpx.post(f"{s.url}/predict", json={"features": CHURN}).status_code == 200
    stop_process(redis_server.proc)
    started = time.monotonic()
    for i in range(20):
        features = {**CHURN, "num_returns": 10 + i}  # none asked before
        r = httpx.post(f"{s.url}/predict", json={"features": features})
        assert r.status_code == 200 and r.headers["x-cache"] == "MISS"
    # 20 predictions with Redis gone: one 50 ms timeout at most, then the breaker is open.
    assert time.monotonic() - started < 5
    # What the worker answered last it still remembers (cache.local_entries).
    again = httpx.post(f"{s.url}/predict", json={"features": CHURN})
    assert again.status_code == 200 and again.headers["x-cache"] == "HIT"


def test_api_keys_guard_predictions_but_not_health(demo_models: Path, replica_factory: Any) -> None:
    digest = hashlib.sha256(b"client-key-1").hexdigest()
    s = replica_factory(
        demo_models, workers=1, env={"MODELGATE_AUTH__API_KEY_SHA256": f'["{digest}"]'}
    )
    assert httpx.post(f"{s.url}/predict", json={"features": CHURN}).status_code == 401
    wrong = httpx.post(
        f"{s.url}/predict", json={"features": CHURN}, headers={"X-API-Key": "client-key-2"}
    )
    assert wrong.status_code == 403 and wrong.json()["error"] == "forbidden"
    ok = httpx.post(
        f"{s.url}/predict",
        json={"features": CHURN},
        headers={"Authorization": "Bearer client-key-1"},
    )
    assert ok.status_code == 200 and ok.json()["model_name"] == "churn"
    assert httpx.get(f"{s.url}/ready").status_code == 200


def test_lookups_and_writes_of_one_turn_share_one_round_trip(redis_server: RedisServer) -> None:
    cache = RedisCache.from_url(redis_server.url, ttl_seconds=60)

    async def run() -> tuple[list[list[dict[str, Any] | None]], dict[str, Any]]:
        # Twenty requests write their answers in one turn, then look them up in one turn.
        for i in range(20):
            await cache.set_many({f"pred:test:{i}": {"prediction": i}})
        await asyncio.sleep(0)  # the next turn: the writes leave, as one pipeline
        assert len(cache._pending) == 1
        await cache.flush_writes()
        found = await asyncio.gather(
            *(cache.get_many([f"pred:test:{i}", "pred:test:absent"]) for i in range(20))
        )
        stats = commandstats(redis_server.url)
        await cache.close()
        return list(found), stats

    found, stats = asyncio.run(run())
    assert found == [[{"prediction": i}, None] for i in range(20)]
    assert stats["cmdstat_mget"]["calls"] == 1
    assert stats["cmdstat_set"]["calls"] == 20


def test_recent_answers_are_served_from_the_worker_and_the_rest_from_redis(
    redis_server: RedisServer,
) -> None:
    near = RedisCache.from_url(redis_server.url, ttl_seconds=60, local_entries=2)
    other = RedisCache.from_url(redis_server.url, ttl_seconds=60, local_entries=2)
    answers = {f"pred:near:{k}": {"prediction": k} for k in "abc"}

    async def run() -> dict[str, Any]:
        for key in ("pred:near:a", "pred:near:b", "pred:near:c"):
            await near.set_many({key: answers[key]})
        await near.flush_writes()
        with redis.Redis.from_url(redis_server.url) as client:
            before = commandstats(redis_server.url).get("cmdstat_mget", {}).get("calls", 0)
            # b and c are the two newest: answered without asking Redis.
            local = await near.get_many(["pred:near:b", "pred:near:c"])
            after_local = commandstats(redis_server.url).get("cmdstat_mget", {}).get("calls", 0)
            # a was pushed out of the worker's memory: Redis answers, and it is kept again.
            from_redis = await near.get_many(["pred:near:a"])
            # Another worker has none of them in memory: all come from Redis.
            elsewhere = await other.get_many(["pred:near:b", "pred:near:c"])
            client.delete(*answers)
            gone = await other.get_many(["pred:near:a"])  # not in its memory, not in Redis
        await near.close()
        await other.close()
        return {
            "local": local,
            "mgets_for_local": after_local - before,
            "from_redis": from_redis,
            "elsewhere": elsewhere,
            "gone": gone,
        }

    out = asyncio.run(run())
    assert out["local"] == [answers["pred:near:b"], answers["pred:near:c"]]
    assert out["mgets_for_local"] == 0
    assert out["from_redis"] == [answers["pred:near:a"]]
    assert out["elsewhere"] == [answers["pred:near:b"], answers["pred:near:c"]]
    assert out["gone"] == [None]
    assert near.stats.local_hits == 2 and near.stats.hits == 3
    assert other.stats.local_hits == 0 and other.stats.misses == 1
