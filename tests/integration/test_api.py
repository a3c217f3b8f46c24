"""Every native endpoint of a real replica, and every way a request can be wrong."""

from __future__ import annotations

import json
import re
import select
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from tests.conftest import Server

CHURN = {
    "age": 35,
    "income": 75000,
    "credit_score": 680,
    "num_purchases": 24,
    "account_age_days": 730,
    "avg_transaction": 85.5,
    "num_returns": 2,
    "is_premium": False,
    "region": 2,
    "category_preference": 3,
}
CHURN_ORDER = list(CHURN)
IRIS = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}

pytestmark = pytest.mark.integration


def row(features: dict[str, Any]) -> list[float]:
    return [float(v) for v in features.values()]


def torch_reference(repo: Path, name: str, version: str, rows: list[list[float]]) -> np.ndarray:
    """The exported model run directly in torch, outside modelgate."""
    path = next((repo / name / version).glob("model.*[!n]"))  # model.pt2 / model.ts
    x = torch.tensor(rows, dtype=torch.float32)
    with torch.inference_mode():
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module()(x).numpy()
        return torch.jit.load(str(path))(x).numpy()


# --- service endpoints ---------------------------------------------------------------


def test_root_names_the_service_and_links(client: httpx.Client) -> None:
    body = client.get("/").json()
    assert body["name"] == "modelgate"
    assert body["links"]["predict"] == "/predict"
    assert body["version"]
    assert body["instance"] == socket.gethostname()  # compose sets hostname per replica


def test_health_reports_models_and_the_refused_version(client: httpx.Client) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["model_loaded"] is True
    age = datetime.now(UTC) - datetime.fromisoformat(body["timestamp"])
    assert timedelta(0) <= age < timedelta(minutes=1)
    assert body["models"] == {"churn": ["1", "2"], "feed": ["1"], "iris": ["1"]}
    assert body["models_loaded"] == 4
    assert body["default_model"] == "churn"
    assert body["default_model_version"] == "2"
    assert body["uptime_seconds"] > 0
    assert body["loaded_at"].startswith("20")
    # Issue 18: a count only; why it was refused is for the log and admin callers.
    assert body["load_failures"] == 1
    assert "sha256" not in str(body)


def test_last_prediction_at_moves_after_a_prediction(client: httpx.Client) -> None:
    client.post("/predict", json={"features": CHURN})
    client.post("/predict", json={"features": CHURN})  # both workers likely saw one
    stamps = {client.get("/health").json()["last_prediction_at"] for _ in range(6)}
    assert any(s is not None for s in stamps)


def test_ready_lists_default_versions(client: httpx.Client) -> None:
    r = client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "models": {"churn": "2", "feed": "1", "iris": "1"}}


def test_models_listing_shows_versions_and_defaults(client: httpx.Client) -> None:
    body = client.get("/models").json()
    assert body["default_model"] == "churn"
    churn = next(m for m in body["models"] if m["name"] == "churn")
    assert churn["default_version"] == "2"
    assert [(v["version"], v["default"], v["format"]) for v in churn["versions"]] == [
        ("1", False, "torchscript"),
        ("2", True, "torch_export"),
    ]


def test_model_detail_carries_manifest_and_training_metadata(client: httpx.Client) -> None:
    body = client.get("/models/iris").json()
    [v1] = body["versions"]
    assert v1["outputs"]["classes"] == ["setosa", "versicolor", "virginica"]
    assert [i["name"] for i in v1["inputs"]] == list(IRIS)
    assert v1["metadata"]["training"]["heldout_accuracy"] > 0.85
    assert len(v1["sha256"]) == 64


def test_model_info_is_the_default_models_default_version(
    client: httpx.Client, served_repository: Path
) -> None:
    body = client.get("/model/info").json()
    assert (body["name"], body["version"], body["default"]) == ("churn", "2", True)
    manifest = (served_repository / "churn" / "2" / "model.json").read_text()
    assert body["sha256"] in manifest
    assert body["loaded_at"]


def test_openapi_docs_carry_examples_from_the_manifest(client: httpx.Client) -> None:
    assert "swagger" in client.get("/docs").text.lower()
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["example"]["features"] == CHURN | {"income": 75000.0}
    named = body["schema"]["properties"]["features"]["oneOf"][0]
    assert named["properties"]["credit_score"] == {
        "type": "integer",
        "minimum": 300,
        "maximum": 850,
    }
    batch = spec["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert batch["schema"]["properties"]["instances"]["maxItems"] == 1000
    # Issue 24: strict bodies, and the version a body may name.
    assert body["schema"]["additionalProperties"] is False
    assert batch["schema"]["properties"]["model_version"]["type"] == "string"


# --- predictions -----------------------------------------------------------------------


def test_predict_named_features_matches_torch(
    client: httpx.Client, served_repository: Path
) -> None:
    r = client.post("/predict", json={"features": CHURN}, headers={"X-Request-ID": "abc-123"})
    assert r.status_code == 200
    body = r.json()
    [p] = torch_reference(served_repository, "churn", "2", [row(CHURN)])
    assert body["probability"] == pytest.approx(float(p), rel=1e-6)
    assert body["prediction"] == int(p >= 0.5)
    assert body["prediction_class"] == body["class_name"] == ["stays", "churns"][int(p >= 0.5)]
    assert (body["model_name"], body["model_version"]) == ("churn", "2")
    assert len(body["prediction_id"]) == 32 and body["latency_ms"] > 0
    assert body["timestamp"].endswith("Z") and body["cached"] is False
    assert r.headers["x-request-id"] == "abc-123"
    assert r.headers["x-model-version"] == "2"
    assert "server" not in r.headers  # the replica doesn't name its server (worker.py)
    assert r.headers["content-length"] == str(len(r.content))


def test_an_answer_leaves_the_replica_in_one_write(replica: Server) -> None:
    """Headers and body in one segment (wire.py): the first read after the socket turns
    readable holds the whole answer. Sent as two writes, the first read of a keep-alive
    connection often finds the headers alone."""
    body = json.dumps({"features": CHURN}).encode()
    request = (
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", replica.port), timeout=10) as conn:
        for _ in range(30):
            conn.sendall(request)
            select.select([conn], [], [], 10)
            first = conn.recv(65536)
            head, _, rest = first.partition(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            assert head.startswith(b"HTTP/1.1 200") and len(rest) == length, first
            assert json.loads(rest)["model_name"] == "churn"


def test_predict_positional_list_equals_named(client: httpx.Client) -> None:
    named = client.post("/predict", json={"features": CHURN}).json()
    positional = client.post("/predict", json={"features": list(CHURN.values())}).json()
    assert positional["probability"] == named["probability"]


def test_pinned_version_route_uses_torchscript_v1(
    client: httpx.Client, served_repository: Path
) -> None:
    body = client.post("/models/churn/versions/1/predict", json={"features": CHURN}).json()
    [p] = torch_reference(served_repository, "churn", "1", [row(CHURN)])
    assert body["model_version"] == "1"
    assert body["probability"] == pytest.approx(float(p), rel=1e-6)


def test_multiclass_model_returns_named_probabilities(
    client: httpx.Client, served_repository: Path
) -> None:
    body = client.post("/models/iris/predict", json={"features": IRIS}).json()
    [probs] = torch_reference(served_repository, "iris", "1", [row(IRIS)])
    assert list(body["probabilities"]) == ["setosa", "versicolor", "virginica"]
    assert list(body["probabilities"].values()) == pytest.approx(probs.tolist(), rel=1e-5)
    assert body["prediction"] == int(np.argmax(probs))
    assert body["class_name"] == "virginica"
    assert "probability" not in body


@pytest.mark.parametrize(
    "path",
    [
        "/predict/batch",
        "/batch_predict",
        "/models/churn/predict/batch",
        "/models/churn/versions/2/predict/batch",
    ],
)
def test_batch_routes_match_torch_row_for_row(
    client: httpx.Client, served_repository: Path, path: str
) -> None:
    rng = np.random.default_rng(7)
    instances = []
    for _ in range(25):
        inst = dict(CHURN)
        inst["age"] = int(rng.integers(18, 90))
        inst["num_purchases"] = int(rng.integers(0, 60))
        inst["account_age_days"] = int(rng.integers(0, 4000))
        inst["is_premium"] = bool(rng.integers(0, 2))
        instances.append(inst)
    r = client.post(path, json={"instances": instances})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = torch_reference(served_repository, "churn", "2", [row(i) for i in instances])
    assert body["batch_size"] == 25 and body["model_version"] == "2"
    got = [p["probability"] for p in body["predictions"]]
    assert got == pytest.approx(expected.tolist(), rel=1e-5, abs=1e-7)
    assert body["total_time_ms"] > 0


@pytest.mark.parametrize(
    "path", ["/predict", "/models/churn/predict", "/models/churn/versions/2/predict"]
)
def test_matrix_form_on_a_single_route_answers_like_the_batch_route(
    client: httpx.Client, served_repository: Path, path: str
) -> None:
    """Issue 24: {"features": [[...], [...]]}, rows in manifest order, as one tutorial's
    whole API sends them; the per-row fields are the batch route's."""
    other = {**CHURN, "age": 61, "is_premium": True}
    r = client.post(path, json={"features": [list(CHURN.values()), list(other.values())]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["batch_size"] == 2 and body["model_name"] == "churn"
    assert body["model_version"] == "2"
    batch = client.post("/predict/batch", json={"instances": [CHURN, other]}).json()
    strip = [{k: v for k, v in p.items() if k != "cached"} for p in body["predictions"]]
    assert strip == [{k: v for k, v in p.items() if k != "cached"} for p in batch["predictions"]]
    expected = torch_reference(served_repository, "churn", "2", [row(CHURN), row(other)])
    got = [p["probability"] for p in body["predictions"]]
    assert got == pytest.approx(expected.tolist(), rel=1e-5, abs=1e-7)


def test_matrix_form_errors_name_the_row_and_feature(client: httpx.Client) -> None:
    good = list(CHURN.values())
    bad = [500, *good[1:]]  # age
    r = client.post("/predict", json={"features": [good, bad]})
    assert_422(r, "features[1][0] (age)", "")
    r = client.post("/predict", json={"features": [good, [1, 2]]})
    assert_422(r, "features[1]", "expected 10 values")


def test_iris_batch_classifies_the_three_species(client: httpx.Client) -> None:
    instances = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.7, 4.1, 1.0], [6.7, 3.0, 5.2, 2.3]]
    body = client.post("/models/iris/predict/batch", json={"instances": instances}).json()
    assert [p["class_name"] for p in body["predictions"]] == ["setosa", "versicolor", "virginica"]


# --- errors ----------------------------------------------------------------------------


def assert_422(r: httpx.Response, field: str, reason_part: str) -> None:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_input"
    fields = {e["field"]: e["reason"] for e in body["errors"]}
    assert field in fields, body
    assert reason_part in fields[field]
    assert body["request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("features", "field", "reason"),
    [
        (
            {k: v for k, v in CHURN.items() if k != "age"},
            "features.age",
            "required feature missing",
        ),
        ({**CHURN, "shoe_size": 44}, "features.shoe_size", "unknown feature"),
        ({**CHURN, "income": "lots"}, "features.income", "expected a number, got string"),
        ({**CHURN, "region": 2.5}, "features.region", "expected an integer"),
        ({**CHURN, "credit_score": 900}, "features.credit_score", "must be <= 850"),
        ({**CHURN, "age": 3}, "features.age", "must be >= 18"),
        ({**CHURN, "is_premium": "yes"}, "features.is_premium", "expected a boolean"),
        ([1, 2, 3], "features", "expected 10 values"),
    ],
)
def test_invalid_features_are_422_naming_the_field(
    client: httpx.Client, features: Any, field: str, reason: str
) -> None:
    assert_422(client.post("/predict", json={"features": features}), field, reason)


@pytest.mark.parametrize(
    ("token", "reason"), [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "Infinity")]
)
def test_nan_and_infinity_are_422(client: httpx.Client, token: str, reason: str) -> None:
    body = (
        '{"features": {'
        + ", ".join(
            f'"{k}": {token if k == "income" else str(v).lower()}' for k, v in CHURN.items()
        )
        + "}}"
    )
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert_422(r, "features.income", reason)


def test_empty_and_oversized_batches_are_422(client: httpx.Client) -> None:
    assert_422(
        client.post("/predict/batch", json={"instances": []}), "instances", "must not be empty"
    )
    r = client.post("/predict/batch", json={"instances": [CHURN] * 1001})
    assert_422(r, "instances", "at most 1000 instances")


def test_bad_row_in_a_batch_is_named_by_index(client: httpx.Client) -> None:
    r = client.post("/predict/batch", json={"instances": [CHURN, {**CHURN, "age": -1}]})
    assert_422(r, "instances[1].age", "must be >= 18")


@pytest.mark.parametrize("body", [b"{", b"not json", b'{"features": }', b""])
def test_malformed_json_is_400(client: httpx.Client, body: bytes) -> None:
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"] == "malformed_request"


@pytest.mark.parametrize(
    "path",
    [
        "/models/nope/predict",
        "/models/churn/versions/9/predict",
        "/models/nope",
        "/models/churn/versions/3/predict",
    ],
)
def test_unknown_model_or_version_is_404(client: httpx.Client, path: str) -> None:
    r = client.request(
        "POST" if path.endswith("predict") else "GET", path, json={"features": CHURN}
    )
    assert r.status_code == 404
    assert r.json()["error"] == "model_not_found"
    assert "nope" in r.json()["message"] or "version" in r.json()["message"]


def test_unknown_route_and_method_answer_json(client: httpx.Client) -> None:
    r = client.get("/no/such/route")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = client.get("/predict")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_oversized_body_is_413_and_service_keeps_serving(client: httpx.Client) -> None:
    r = client.post(
        "/predict",
        content=b"[" + b"1," * 3_000_000 + b"1]",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    assert client.post("/predict", json={"features": CHURN}).status_code == 200


def test_no_input_leaks_a_traceback(client: httpx.Client, replica: Server) -> None:
    nasty = [
        b"[" * 100_000,
        b'{"features": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"features": {"age": 1e999}}',
        '{"features": "\u0000"}'.encode(),
    ]
    for body in nasty:
        r = client.post("/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code in (400, 422), (body[:40], r.status_code, r.text[:200])
        assert "Traceback" not in r.text
    assert client.get("/ready").status_code == 200


def test_a_body_key_the_server_would_ignore_is_refused(client: httpx.Client) -> None:
    answer = client.post("/predict", json={"features": CHURN, "context": {"user": 7}})
    assert answer.status_code == 422
    body = answer.json()
    assert body["field"] == "context" and "remove it" in body["reason"]
    batch = client.post("/predict/batch", json={"instances": [CHURN], "inputs": []})
    assert batch.status_code == 422 and batch.json()["field"] == "inputs"


def test_model_version_in_the_body_selects_that_version(client: httpx.Client) -> None:
    """Issue 24: it used to be ignored, and the default version (2) answered."""
    pinned = client.post("/predict", json={"features": CHURN, "model_version": "1"})
    assert pinned.status_code == 200 and pinned.json()["model_version"] == "1"
    by_path = client.post("/models/churn/versions/1/predict", json={"features": CHURN})
    assert pinned.json()["probability"] == by_path.json()["probability"]
    batch = client.post(
        "/models/churn/predict/batch", json={"instances": [CHURN], "model_version": 1}
    )
    assert batch.status_code == 200 and batch.json()["model_version"] == "1"
    same = client.post(
        "/models/churn/versions/1/predict", json={"features": CHURN, "model_version": "1"}
    )
    assert same.status_code == 200
    absent = client.post("/predict", json={"features": CHURN, "model_version": "9"})
    assert absent.status_code == 404 and absent.json()["error"] == "model_not_found"
    clash = client.post(
        "/models/churn/versions/1/predict", json={"features": CHURN, "model_version": "2"}
    )
    assert clash.status_code == 422 and clash.json()["field"] == "model_version"
