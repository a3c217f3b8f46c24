"""The docs page lists every route's answer, and the docs match the real answers.

Each documented route must have a 200 answer with a schema (a description per field) and
an example, and a 4xx error shape. A real request to each route must answer with exactly
the documented keys: every required key, and nothing undocumented (optional keys, such as
``probability`` vs ``probabilities``, depend on the model).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelgate.app import create_app
from modelgate.edge.responses import documented
from modelgate.settings import AuthSettings, Settings

ADMIN_KEY = "docs-admin-key"
FEATURES = [35, 75000, 680, 24, 730, 85.5, 2, False, 2, 3]
IRIS = [5.1, 3.5, 1.4, 0.2]
V2_BODY = {
    "inputs": [
        {
            "name": "input",
            "shape": [1, 10],
            "datatype": "FP32",
            "data": [float(x) for x in FEATURES],
        }
    ]
}
# (method, documented path, concrete path, body); the admin routes that change the loaded
# models are in ADMIN_CHANGES, run on a private copy of the repository.
REQUESTS: list[tuple[str, str, str, Any]] = [
    ("POST", "/predict", "/predict", {"features": FEATURES}),
    ("POST", "/models/{name}/predict", "/models/iris/predict", {"features": IRIS}),
    ("POST", "/models/{name}/versions/{version}/predict",
     "/models/churn/versions/1/predict", {"features": FEATURES}),
    ("POST", "/models/{name}/predict", "/models/churn/predict", {"features": [FEATURES, FEATURES]}),
    ("POST", "/predict/batch", "/predict/batch", {"instances": [FEATURES, FEATURES]}),
    ("POST", "/batch_predict", "/batch_predict", {"instances": [FEATURES]}),
    ("POST", "/models/{name}/predict/batch", "/models/iris/predict/batch", {"instances": [IRIS]}),
    ("POST", "/models/{name}/versions/{version}/predict/batch",
     "/models/churn/versions/2/predict/batch", {"instances": [FEATURES]}),
    ("POST", "/v1/models/{name}:predict", "/v1/models/churn:predict", {"instances": [FEATURES]}),
    ("POST", "/v1/models/{name}/versions/{version}:predict",
     "/v1/models/churn/versions/1:predict", {"instances": [FEATURES]}),
    ("POST", "/v2/models/{name}/infer", "/v2/models/churn/infer", V2_BODY),
    ("POST", "/v2/models/{name}/versions/{version}/infer",
     "/v2/models/churn/versions/2/infer", {**V2_BODY, "id": "abc"}),
    ("GET", "/", "/", None),
    ("GET", "/health", "/health", None),
    ("GET", "/ready", "/ready", None),
    ("GET", "/models", "/models", None),
    ("GET", "/models/{name}", "/models/churn", None),
    ("GET", "/model/info", "/model/info", None),
    ("GET", "/stats", "/stats", None),
    ("GET", "/stats/replica", "/stats/replica", None),
    ("GET", "/v1/models/{name}", "/v1/models/churn", None),
    ("GET", "/v1/models/{name}/versions/{version}", "/v1/models/churn/versions/1", None),
    ("GET", "/v1/models/{name}/metadata", "/v1/models/churn/metadata", None),
    ("GET", "/v1/models/{name}/versions/{version}/metadata",
     "/v1/models/churn/versions/1/metadata", None),
    ("GET", "/v2", "/v2", None),
    ("GET", "/v2/health/live", "/v2/health/live", None),
    ("GET", "/v2/health/ready", "/v2/health/ready", None),
    ("GET", "/v2/models/{name}", "/v2/models/churn", None),
    ("GET", "/v2/models/{name}/versions/{version}", "/v2/models/churn/versions/1", None),
    ("GET", "/v2/models/{name}/ready", "/v2/models/churn/ready", None),
    ("GET", "/v2/models/{name}/versions/{version}/ready",
     "/v2/models/churn/versions/1/ready", None),
    ("POST", "/v2/repository/index", "/v2/repository/index", None),
]  # fmt: skip
# Ranking needs a ranker and its features in Redis: its answer is checked against these
# docs by tests/integration/test_rank_api.py.
RANK_ROUTES = {
    ("POST", "/rank"),
    ("POST", "/models/{name}/rank"),
    ("POST", "/models/{name}/versions/{version}/rank"),
}
ADMIN_CHANGES: list[tuple[str, str, str, Any]] = [
    ("POST", "/admin/models/{name}/load", "/admin/models/churn/load", {"version": "1"}),
    ("POST", "/admin/models/{name}/unload", "/admin/models/churn/unload", {"version": "1"}),
    ("POST", "/v2/repository/models/{name}/load", "/v2/repository/models/churn/load",
     {"parameters": {"version": "1"}}),
    ("POST", "/v2/repository/models/{name}/unload", "/v2/repository/models/churn/unload",
     {"parameters": {"version": "1"}}),
]  # fmt: skip


@pytest.fixture(scope="module")
def client(demo_models: Path) -> Iterator[TestClient]:
    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    app = create_app(
        Settings(model_repository=demo_models, auth=AuthSettings(admin_key_sha256=digest))
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def docs(client: TestClient) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/openapi.json").json()
    return body


def _operation(docs: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = docs["paths"][path][method.lower()]
    return operation


def _fields_described(schema: dict[str, Any], where: str) -> None:
    for alternative in schema.get("oneOf", []):
        _fields_described(alternative, where)
    for name, prop in schema.get("properties", {}).items():
        assert prop.get("description"), f"{where}: field {name} has no description"
        if prop.get("type") == "object":
            _fields_described(prop, f"{where}.{name}")
        if prop.get("type") == "array" and isinstance(prop.get("items"), dict):
            _fields_described(prop["items"], f"{where}.{name}[]")


def test_every_route_documents_its_answer_and_errors(docs: dict[str, Any]) -> None:
    routes = documented()
    # Every documented route exists, and every route a client calls is documented.
    requested = {(m, p) for m, p, _, _ in REQUESTS + ADMIN_CHANGES}
    assert set(routes) == requested | RANK_ROUTES
    for method, path in routes:
        responses = _operation(docs, method, path)["responses"]
        ok = responses["200"]["content"]["application/json"]
        assert "example" in ok, f"{method} {path}: no example"
        _fields_described(ok["schema"], f"{method} {path}")
        error = responses["4XX"]["content"]["application/json"]
        assert "error" in error["schema"]["properties"], f"{method} {path}"
        assert set(error["example"]) <= set(error["schema"]["properties"])
        # The example itself has the documented keys (so the docs don't contradict).
        _assert_keys(ok["schema"], ok["example"], f"{method} {path} example")


def _assert_keys(schema: dict[str, Any], answer: Any, where: str) -> None:
    if "oneOf" in schema:  # the answer has the keys of one of the documented shapes
        failures = []
        for alternative in schema["oneOf"]:
            try:
                _assert_keys(alternative, answer, where)
                return
            except AssertionError as e:
                failures.append(str(e))
        raise AssertionError("; ".join(failures))
    if schema.get("type") == "array":
        assert isinstance(answer, list), where
        for item in answer:
            _assert_keys(schema["items"], item, where)
        return
    assert isinstance(answer, dict), where
    documented_keys = set(schema["properties"])
    assert set(answer) <= documented_keys, f"{where}: undocumented {set(answer) - documented_keys}"
    assert set(schema["required"]) <= set(answer), (
        f"{where}: missing {set(schema['required']) - set(answer)}"
    )


@pytest.mark.parametrize(
    ("method", "path", "url", "body"), REQUESTS, ids=[f"{m} {u}" for m, _, u, _ in REQUESTS]
)
def test_a_real_answer_has_the_documented_keys(
    client: TestClient, docs: dict[str, Any], method: str, path: str, url: str, body: Any
) -> None:
    admin = {"X-API-Key": ADMIN_KEY} if url.startswith("/v2/repository") else {}
    r = client.request(method, url, json=body, headers=admin)
    assert r.status_code == 200, r.text
    schema = _operation(docs, method, path)["responses"]["200"]["content"]["application/json"]
    _assert_keys(schema["schema"], r.json(), f"{method} {url}")


def test_a_real_error_has_the_documented_keys(client: TestClient, docs: dict[str, Any]) -> None:
    for method, path, url, body in [
        ("POST", "/predict", "/predict", {"features": {"age": 1000}}),
        ("POST", "/models/{name}/predict", "/models/nope/predict", {"features": FEATURES}),
        ("POST", "/v1/models/{name}:predict", "/v1/models/churn:predict", {}),
        ("POST", "/v2/models/{name}/infer", "/v2/models/nope/infer", V2_BODY),
    ]:
        r = client.request(method, url, json=body)
        assert 400 <= r.status_code < 500, r.text
        error = _operation(docs, method, path)["responses"]["4XX"]["content"]["application/json"]
        _assert_keys(error["schema"], r.json(), f"{method} {url} error")


def test_admin_answers_have_the_documented_keys(model_copy: Path, docs: dict[str, Any]) -> None:
    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    app = create_app(
        Settings(model_repository=model_copy, auth=AuthSettings(admin_key_sha256=digest))
    )
    with TestClient(app, raise_server_exceptions=False) as admin:
        for method, path, url, body in ADMIN_CHANGES:
            r = admin.request(method, url, json=body, headers={"X-API-Key": ADMIN_KEY})
            assert r.status_code == 200, f"{url}: {r.text}"
            ok = _operation(docs, method, path)["responses"]["200"]["content"]
            _assert_keys(ok["application/json"]["schema"], r.json(), f"{method} {url}")
