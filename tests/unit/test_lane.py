"""The prediction lane serves prediction routes without the framework's routing, and
answers exactly as those routes do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from modelgate.app import create_app
from modelgate.edge.lane import PredictionLane
from modelgate.settings import Settings

FEATURES = [35, 75000, 680, 24, 730, 85.5, 2, False, 2, 3]

PREDICTION_ROUTES = {
    "/predict",
    "/predict/batch",
    "/batch_predict",
    "/models/{name}/predict",
    "/models/{name}/predict/batch",
    "/models/{name}/versions/{version}/predict",
    "/models/{name}/versions/{version}/predict/batch",
    "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}/infer",
    "/v1/models/{name}:predict",
    "/v1/models/{name}/versions/{version}:predict",
    "/rank",
    "/models/{name}/rank",
    "/models/{name}/versions/{version}/rank",
}


@pytest.fixture
def routed() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def client(
    demo_models: Path, routed: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    app = create_app(Settings(model_repository=demo_models))
    framework = type(app.router).__call__

    async def record(router: APIRouter, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            routed.append((scope["method"], scope["path"]))
        await framework(router, scope, receive, send)

    # Every request the framework's router sees is recorded.
    monkeypatch.setattr(type(app.router), "__call__", record)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_the_lane_takes_every_prediction_route_and_only_those(
    client: TestClient, routed: list[tuple[str, str]]
) -> None:
    lane = client.app.edge.app  # type: ignore[attr-defined]
    assert isinstance(lane, PredictionLane)
    assert {r.route.path for r in lane._routes} == PREDICTION_ROUTES
    client.get("/health")
    assert routed == [("GET", "/health")]  # the recording works


def test_prediction_routes_answer_through_the_lane(
    client: TestClient, routed: list[tuple[str, str]]
) -> None:
    single = {"features": FEATURES}
    batch = {"instances": [FEATURES, FEATURES]}
    r = client.post("/models/churn/versions/1/predict", json=single)
    assert r.status_code == 200 and r.json()["model_version"] == "1"
    assert r.headers["x-model-version"] == "1" and r.headers["x-request-id"]
    r = client.post("/batch_predict", json=batch)
    assert r.status_code == 200 and r.json()["batch_size"] == 2
    v2 = {"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32",
                      "data": [float(x) for x in FEATURES]}]}  # fmt: skip
    r = client.post("/v2/models/churn/infer", json=v2)
    assert r.status_code == 200 and r.json()["model_name"] == "churn"
    r = client.post("/v1/models/churn:predict", json={"instances": [FEATURES]})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1
    assert routed == []  # none of them reached the framework's router


def test_errors_through_the_lane_keep_their_shape(
    client: TestClient, routed: list[tuple[str, str]]
) -> None:
    r = client.post("/predict", json={"features": FEATURES[:3]})
    assert r.status_code == 422 and r.json()["error"] == "invalid_input"
    assert r.json()["field"] == "features"
    r = client.post("/models/nope/predict", json={"features": FEATURES})
    assert r.status_code == 404 and r.json()["error"] == "model_not_found"
    r = client.post("/v2/models/churn/infer", content=b"{not json")
    assert r.status_code == 400 and set(r.json()) == {"error"}
    # Other methods on a prediction path are the framework's: a JSON 405.
    r = client.get("/predict")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    assert routed == [("GET", "/predict")]


def test_lane_requests_are_counted_by_route_template(client: TestClient) -> None:
    client.post("/models/churn/predict", json={"features": FEATURES})
    client.post("/models/churn/predict", json={"features": []})
    client.get("/metrics")  # a scrape writes out the sums (else 5 ms after going idle)
    registry: CollectorRegistry = client.app.state.metrics.registry  # type: ignore[attr-defined]

    def count(status: str) -> float | None:
        labels = {"handler": "/models/{name}/predict", "method": "POST", "status": status}
        return registry.get_sample_value("http_requests_total", labels)

    assert count("2xx") == 1 and count("4xx") == 1


def test_remembered_matches_are_the_patterns_answers_and_bounded(client: TestClient) -> None:
    lane = client.app.edge.app  # type: ignore[attr-defined]
    first = lane._match("/models/churn/versions/2/predict")
    again = lane._match("/models/churn/versions/2/predict")
    assert first is again  # remembered
    assert first[0].route.path == "/models/{name}/versions/{version}/predict"
    assert first[1] == {"name": "churn", "version": "2"}
    assert lane._match("/models/churn/explain") is None
    assert lane._match("/models/churn/explain") is None  # a remembered miss
    for i in range(3000):  # paths are the client's choice: memory stays bounded
        lane._match(f"/models/m{i}/predict")
    assert len(lane._matched) <= 1024
    assert lane._match("/models/m2999/predict")[1] == {"name": "m2999"}
