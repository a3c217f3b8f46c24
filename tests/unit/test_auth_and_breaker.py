"""API-key checks and the Redis circuit breaker, without any network."""

from __future__ import annotations

import asyncio
import hashlib
from types import SimpleNamespace

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modelgate.edge.auth import AdminDep, ClientDep, matches_any
from modelgate.errors import install_error_handlers
from modelgate.settings import AuthSettings, Settings
from modelgate.shared.breaker import CircuitBreaker
from modelgate.shared.cache import cache_key
from modelgate.shared.rediscache import RedisCache
from tests.conftest import free_port


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def app_with(auth: AuthSettings) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    settings = Settings(auth=auth)

    @app.middleware("http")
    async def state(request, call_next):  # type: ignore[no-untyped-def]
        request.scope.setdefault("state", {})["worker"] = SimpleNamespace(settings=settings)
        return await call_next(request)

    @app.get("/p")
    async def predict(_: ClientDep) -> dict[str, bool]:
        return {"ok": True}

    @app.get("/admin")
    async def admin(_: AdminDep) -> dict[str, bool]:
        return {"admin": True}

    return TestClient(app)


def test_matches_any_hashes_and_compares_all() -> None:
    assert matches_any("s3cret", [digest("other"), digest("s3cret").upper()])
    assert not matches_any("s3cret", [digest("other")])
    assert not matches_any("s3cret", [])


def test_open_when_no_client_keys_and_admin_off_without_admin_key() -> None:
    c = app_with(AuthSettings())
    assert c.get("/p").json() == {"ok": True}
    r = c.get("/admin", headers={"X-API-Key": "anything"})
    assert r.status_code == 404 and "disabled" in r.json()["message"]


def test_client_keys_401_403_and_both_header_forms() -> None:
    c = app_with(
        AuthSettings(api_key_sha256=[digest("k1"), digest("k2")], admin_key_sha256=digest("root"))
    )
    r = c.get("/p")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert c.get("/p", headers={"X-API-Key": "nope"}).status_code == 403
    assert c.get("/p", headers={"X-API-Key": "k2"}).json() == {"ok": True}
    assert c.get("/p", headers={"Authorization": "Bearer k1"}).json() == {"ok": True}
    # A client key is not an admin key, and the admin key works only on admin routes' terms.
    assert c.get("/admin", headers={"X-API-Key": "k1"}).status_code == 403
    assert c.get("/admin").status_code == 401
    assert c.get("/admin", headers={"Authorization": "Bearer root"}).json() == {"admin": True}


def test_breaker_opens_for_the_cooldown_then_lets_one_probe_through() -> None:
    now = [100.0]
    b = CircuitBreaker(cooldown=5.0, clock=lambda: now[0])
    assert b.allow()
    assert b.failed()  # this failure opened it: worth one log line
    assert not b.allow()
    assert not b.failed()  # already open: no second line
    now[0] = 104.9
    assert not b.allow()
    now[0] = 105.0
    assert b.allow()
    b.succeeded()
    assert b.allow()


def test_dead_redis_is_a_miss_and_then_costs_nothing() -> None:
    async def scenario() -> tuple[list[object], list[object], int, int]:
        cache = RedisCache.from_url(f"redis://127.0.0.1:{free_port()}/0", 60, timeout_s=0.05)
        first = await cache.get_many(["a", "b"])
        second = await cache.get_many(["a"])  # breaker open: Redis not even tried
        await cache.set_many({"a": {"x": 1}})
        await cache.close()
        return first, second, cache.stats.errors, cache.stats.skipped

    first, second, errors, skipped = asyncio.run(scenario())
    assert first == [None, None] and second == [None]
    assert errors == 1 and skipped == 1


def test_cache_key_is_model_version_sha_and_canonical_row() -> None:
    row = np.array([35, 1.0, 0], dtype=np.float32)
    # Issue 18: the key also names the manifest's digest (a manifest-only edit is new).
    key = cache_key("churn", "2", "ab" * 32, "ef" * 32, row)
    name, model, version, sha, manifest, rowhash = key.split(":")
    assert (name, model, version, sha, manifest) == ("pred", "churn", "2", "ab" * 6, "ef" * 6)
    assert rowhash == hashlib.sha256(row.tobytes()).hexdigest()
    assert cache_key("churn", "3", "ab" * 32, "ef" * 32, row) != key
    assert cache_key("churn", "2", "cd" * 32, "ef" * 32, row) != key
    assert cache_key("churn", "2", "ab" * 32, "01" * 32, row) != key
