"""The app in-process: the error table's catch-all and readiness during shutdown."""

from __future__ import annotations

import gc
import logging
import os
import signal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modelgate.app import create_app
from modelgate.edge.deps import Lifecycle
from modelgate.edge.process import YOUNG_GC_THRESHOLD, drain_on_sigterm
from modelgate.inference.service import PredictionService
from modelgate.routes import models as models_routes
from modelgate.settings import Settings

FEATURES = [35, 75000, 680, 24, 730, 85.5, 2, False, 2, 3]


@pytest.fixture
def client(demo_models: Path) -> TestClient:
    app = create_app(Settings(model_repository=demo_models))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c  # type: ignore[misc]


def test_unexpected_error_is_a_generic_500_logged_with_the_request_id(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode(*_: object) -> None:
        raise RuntimeError("secret path /opt/internal/weights")

    monkeypatch.setattr(PredictionService, "run", explode)
    with caplog.at_level(logging.ERROR, logger="modelgate.errors"):
        r = client.post("/predict", json={"features": FEATURES}, headers={"X-Request-ID": "rid-9"})
    assert r.status_code == 500
    assert r.json() == {
        "error": "internal_error",
        "message": "internal server error",
        "request_id": "rid-9",
    }
    assert "secret" not in r.text
    [record] = [rec for rec in caplog.records if rec.name == "modelgate.errors"]
    assert record.request_id == "rid-9"  # type: ignore[attr-defined]
    assert "secret path" in str(record.exc_info[1])  # type: ignore[index]


def test_an_error_in_a_framework_routed_request_is_the_same_generic_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*_: object, **__: object) -> None:
        raise RuntimeError("secret detail")

    # GET /models goes through FastAPI's routing (not the prediction lane).
    monkeypatch.setattr(models_routes, "describe_entry", explode)
    with caplog.at_level(logging.ERROR):
        r = client.get("/models", headers={"X-Request-ID": "rid-10"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "rid-10"
    assert r.json() == {
        "error": "internal_error",
        "message": "internal server error",
        "request_id": "rid-10",
    }
    # Logged once, by modelgate with the request id; not again by the framework or server.
    [record] = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert record.name == "modelgate.errors" and record.request_id == "rid-10"  # type: ignore[attr-defined]
    assert client.get("/health").status_code == 200


def test_ready_is_503_once_draining(client: TestClient) -> None:
    assert client.get("/ready").status_code == 200
    client.app.state.lifecycle.draining = True  # type: ignore[attr-defined]
    r = client.get("/ready")
    assert r.status_code == 503
    assert r.json() == {"status": "draining"}
    assert client.get("/health").status_code == 200  # still alive, just not ready


def test_sigterm_marks_draining_and_chains_to_the_servers_handler() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: seen.append(signum))
    try:
        lifecycle = Lifecycle()
        drain_on_sigterm(lifecycle)
        os.kill(os.getpid(), signal.SIGTERM)
        assert lifecycle.draining
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_not_ready_without_models(tmp_path: Path) -> None:
    app = create_app(Settings(model_repository=tmp_path))
    with TestClient(app) as c:
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["status"] == "not_ready"
        health = c.get("/health")
        assert health.status_code == 200 and health.json()["model_loaded"] is False
        r = c.post("/predict", json={"features": FEATURES})
        assert r.status_code == 404 and r.json()["error"] == "model_not_found"


def test_requests_in_flight_return_to_zero_whatever_the_outcome(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batcher waits for company only while requests are in flight: a count that
    # leaked would make every lone request wait the whole batching window.
    edge = client.app.edge  # type: ignore[attr-defined]
    client.post("/predict", json={"features": FEATURES})
    client.post("/predict", json={"features": [1]})
    client.get("/nowhere")

    async def explode(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(PredictionService, "run", explode)
    assert client.post("/predict", json={"features": FEATURES}).status_code == 500
    assert edge.requests_in_flight == 0


def test_startup_freezes_what_loading_made_and_collects_the_young_generation_less_often(
    demo_models: Path,
) -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])
    gc.unfreeze()  # an app built by an earlier test froze the heap already
    try:
        app = create_app(Settings(model_repository=demo_models))
        with TestClient(app):
            assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *before[1:])
            assert gc.get_freeze_count() > 0  # torch, FastAPI, the models: out of the scans
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
