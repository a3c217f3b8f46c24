"""Fleet-wide load/unload over Redis with real replicas (2 workers each)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RedisServer, add_version, wait_until
from tests.integration.test_api import CHURN

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": "fleet-admin"}


def fleet_env(redis_server: RedisServer, instance: str) -> dict[str, str]:
    return {
        "MODELGATE_REDIS_URL": redis_server.url,
        "MODELGATE_AUTH__ADMIN_KEY_SHA256": hashlib.sha256(b"fleet-admin").hexdigest(),
        "MODELGATE_INSTANCE": instance,
    }


def fleet(url: str) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/models/churn").json()["fleet"]  # type: ignore[no-any-return]


def served_versions(url: str, n: int = 8) -> set[str]:
    """The versions n fresh connections get (fresh, so both workers answer)."""
    return {
        httpx.post(f"{url}/predict", json={"features": CHURN}).json()["model_version"]
        for _ in range(n)
    }


def test_load_and_unload_reach_every_worker_of_every_replica(
    model_copy: Path, replica_factory: Any, redis_server: RedisServer
) -> None:
    a = replica_factory(model_copy, workers=2, env=fleet_env(redis_server, "a"))
    b = replica_factory(model_copy, workers=2, env=fleet_env(redis_server, "b"))
    wait_until(lambda: len(fleet(a.url)) == 4, 10, "4 workers reporting")
    assert {w["default_version"] for w in fleet(b.url)} == {"2"}

    r = httpx.post(f"{a.url}/admin/models/churn/load", json={"version": "1"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["propagated"] is True, r.text
    wait_until(
        lambda: [w["default_version"] for w in fleet(b.url)] == ["1"] * 4,
        10,
        "every worker on v1",
    )
    assert {w["instance"] for w in fleet(b.url)} == {"a", "b"}
    assert served_versions(a.url) == served_versions(b.url) == {"1"}

    # A damaged version is refused by the receiving worker and never published.
    add_version(model_copy, "churn", "2", "3", data=b"not a model")
    refused = httpx.post(f"{b.url}/admin/models/churn/load", json={"version": "3"}, headers=ADMIN)
    assert refused.status_code == 422 and refused.json()["error"] == "model_refused"
    assert [w["default_version"] for w in fleet(a.url)] == ["1"] * 4

    # A replica that starts later replays the stream and joins the fleet on v1, not on
    # the highest version it finds on disk.
    c = replica_factory(model_copy, workers=1, env=fleet_env(redis_server, "c"))
    assert served_versions(c.url, 2) == {"1"}

    r = httpx.post(f"{b.url}/admin/models/churn/unload", json={"version": "2"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    wait_until(
        lambda: [w["versions"] for w in fleet(c.url)] == [["1"]] * 5,
        10,
        "v2 unloaded everywhere",
    )
    versioned = httpx.post(f"{a.url}/models/churn/versions/2/predict", json={"features": CHURN})
    assert versioned.status_code == 404
