"""Admin routes in-process, without Redis: a command applies to the receiving worker."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modelgate.app import create_app
from modelgate.settings import AuthSettings, Settings
from tests.conftest import add_version

FEATURES = [35, 75000, 680, 24, 730, 85.5, 2, False, 2, 3]
ADMIN = {"X-API-Key": "admin-secret"}


def make_client(models: Path, admin_key: str | None) -> TestClient:
    digest = hashlib.sha256(admin_key.encode()).hexdigest() if admin_key else None
    settings = Settings(model_repository=models, auth=AuthSettings(admin_key_sha256=digest))
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture
def admin(model_copy: Path) -> Iterator[TestClient]:
    with make_client(model_copy, "admin-secret") as c:
        yield c


def test_admin_routes_do_not_exist_without_an_admin_key(demo_models: Path) -> None:
    with make_client(demo_models, None) as c:
        r = c.post("/admin/models/churn/load", json={"version": "1"}, headers=ADMIN)
        assert r.status_code == 404 and "disabled" in r.json()["message"]


def test_admin_key_is_required_and_client_keys_are_not_enough(admin: TestClient) -> None:
    assert admin.post("/admin/models/churn/load", json={"version": "1"}).status_code == 401
    wrong = admin.post(
        "/admin/models/churn/load", json={"version": "1"}, headers={"X-API-Key": "nope"}
    )
    assert wrong.status_code == 403


def test_load_makes_a_version_the_default(admin: TestClient) -> None:
    assert admin.post("/predict", json={"features": FEATURES}).json()["model_version"] == "2"
    r = admin.post("/admin/models/churn/load", json={"version": "1"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["action"] == "load" and body["version"] == "1"
    assert body["applied_here"] is True and body["propagated"] is False
    assert body["sha256"] == admin.get("/models/churn").json()["versions"][0]["sha256"]
    assert admin.post("/predict", json={"features": FEATURES}).json()["model_version"] == "1"
    fleet = admin.get("/models/churn").json()["fleet"]
    assert [w["default_version"] for w in fleet] == ["1"]


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({}, "version", "field required"),
        ({"version": "two"}, "version", "must be a version number"),
        ({"version": "1", "force": True}, "force", "unknown field"),
        ([1], "body", "must be a JSON object"),
    ],
)
def test_bad_admin_bodies_name_the_field(
    admin: TestClient, body: object, field: str, reason: str
) -> None:
    r = admin.post("/admin/models/churn/load", json=body, headers=ADMIN)
    assert r.status_code == 422
    assert r.json()["field"] == field and reason in r.json()["reason"]


def test_unknown_version_is_404_and_changes_nothing(admin: TestClient) -> None:
    r = admin.post("/admin/models/churn/load", json={"version": "9"}, headers=ADMIN)
    assert r.status_code == 404 and r.json()["error"] == "model_not_found"
    assert admin.get("/models/churn").json()["default_version"] == "2"


def test_refused_version_is_422_and_the_old_one_keeps_serving(
    admin: TestClient, model_copy: Path
) -> None:
    # A version added after start whose file does not match its manifest.
    add_version(model_copy, "churn", "2", "3", data=b"PK\x03\x04 not the model")
    r = admin.post("/admin/models/churn/load", json={"version": "3"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"] == "model_refused"
    assert "sha256 mismatch" in r.json()["message"]
    assert admin.post("/predict", json={"features": FEATURES}).json()["model_version"] == "2"


def test_a_version_added_to_disk_after_start_can_be_loaded(
    admin: TestClient, model_copy: Path
) -> None:
    add_version(model_copy, "churn", "1", "3")
    r = admin.post("/admin/models/churn/load", json={"version": 3}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["version"] == "3"
    assert admin.post("/predict", json={"features": FEATURES}).json()["model_version"] == "3"


def test_unload_a_version_then_the_whole_model(admin: TestClient) -> None:
    r = admin.post("/admin/models/churn/unload", json={"version": "2"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["applied_here"] is True
    entry = admin.get("/models/churn").json()
    assert entry["default_version"] == "1" and [v["version"] for v in entry["versions"]] == ["1"]
    again = admin.post("/admin/models/churn/unload", json={"version": "2"}, headers=ADMIN)
    assert again.status_code == 404
    assert admin.post("/admin/models/iris/unload", headers=ADMIN).status_code == 200
    assert admin.get("/models/iris").status_code == 404
    assert admin.get("/ready").status_code == 200  # an unloaded model is no longer awaited
