"""V2 (Open Inference Protocol) with the real tritonclient, and V1 (TF Serving REST) with
plain HTTP, against a real replica. Answers must equal the native API's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ROOT, Server
from tests.integration.test_api import CHURN, IRIS, torch_reference

pytestmark = pytest.mark.integration

CHURN_ROW = [float(v) for v in CHURN.values()]


@pytest.fixture
def triton(replica: Server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=replica.url.removeprefix("http://"))


def native(client: httpx.Client, model: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = client.post(f"/models/{model}/predict/batch", json={"instances": rows})
    assert r.status_code == 200, r.text
    return r.json()["predictions"]  # type: ignore[no-any-return]


def infer_input(rows: np.ndarray, binary: bool, datatype: str = "FP32") -> httpclient.InferInput:
    tensor = httpclient.InferInput("input", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return tensor


# --- V2 -----------------------------------------------------------------------------------


def test_server_health_and_metadata(triton: httpclient.InferenceServerClient) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta["name"] == "modelgate"
    assert {"binary_tensor_data", "model_repository"} <= set(meta["extensions"])


def test_model_metadata_and_readiness(triton: httpclient.InferenceServerClient) -> None:
    meta = triton.get_model_metadata("churn")
    assert meta["versions"] == ["1", "2"]  # v3 on disk is damaged, so not served
    assert meta["platform"] == "pytorch_export"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}]
    assert meta["outputs"] == [
        {"name": "probability", "datatype": "FP32", "shape": [-1]},
        {"name": "prediction", "datatype": "INT64", "shape": [-1]},
    ]
    v1 = triton.get_model_metadata("churn", model_version="1")
    assert v1["platform"] == "pytorch_libtorch"
    iris = triton.get_model_metadata("iris")
    assert iris["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
    assert triton.is_model_ready("churn") and triton.is_model_ready("churn", "1")
    assert not triton.is_model_ready("churn", "3")
    assert not triton.is_model_ready("nope")


@pytest.mark.parametrize("binary", [True, False])
def test_infer_equals_the_native_answer(
    triton: httpclient.InferenceServerClient, client: httpx.Client, binary: bool
) -> None:
    rows = np.array([CHURN_ROW, [*CHURN_ROW[:7], 1.0, 1.0, 4.0]], dtype=np.float32)
    outputs = [
        httpclient.InferRequestedOutput("probability", binary_data=binary),
        httpclient.InferRequestedOutput("prediction", binary_data=binary),
    ]
    result = triton.infer("churn", [infer_input(rows, binary)], outputs=outputs, request_id="r-1")
    assert result.get_response()["id"] == "r-1"
    assert result.get_response()["model_version"] == "2"
    expected = native(
        client,
        "churn",
        [CHURN, {**CHURN, "is_premium": True, "region": 1, "category_preference": 4}],
    )
    probability = result.as_numpy("probability")
    assert probability.dtype == np.float32 and probability.shape == (2,)
    assert probability.tolist() == pytest.approx([p["probability"] for p in expected], abs=1e-7)
    assert result.as_numpy("prediction").tolist() == [p["prediction"] for p in expected]


def test_a_batch_of_iris_rows_through_a_version(
    triton: httpclient.InferenceServerClient, client: httpx.Client
) -> None:
    flowers = [
        IRIS,
        {**IRIS, "petal_length": 1.4, "petal_width": 0.2},
        {**IRIS, "sepal_width": 2.5},
    ]
    rows = np.array([list(f.values()) for f in flowers], dtype=np.float32)
    result = triton.infer("iris", [infer_input(rows, True)], model_version="1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (3, 3)
    expected = native(client, "iris", flowers)
    for got, want in zip(probabilities.tolist(), expected, strict=True):
        assert got == pytest.approx(list(want["probabilities"].values()), abs=1e-7)
    assert result.as_numpy("prediction").tolist() == [p["prediction"] for p in expected]


def test_bad_requests_raise_the_servers_message(triton: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match=r"shape \[1, 9\] does not match") as shape:
        triton.infer("churn", [infer_input(np.zeros((1, 9), np.float32), True)])
    assert shape.value.status() == "400"
    with pytest.raises(InferenceServerException, match="datatype 'INT32' does not match"):
        triton.infer("churn", [infer_input(np.zeros((1, 10), np.int32), False, "INT32")])
    with pytest.raises(InferenceServerException, match="model 'nope' is not served") as unknown:
        triton.infer("nope", [infer_input(np.zeros((1, 10), np.float32), True)])
    assert unknown.value.status() == "404"
    bad = np.array([[*CHURN_ROW[:7], 0.5, 2.0, 3.0]], dtype=np.float32)  # is_premium 0.5
    with pytest.raises(InferenceServerException, match=r"input\[0\]\[7\] \(is_premium\)"):
        triton.infer("churn", [infer_input(bad, True)])


def test_repository_index_needs_the_admin_key(triton: httpclient.InferenceServerClient) -> None:
    # Issue 18: the index lists what is on disk and why versions were refused, so it is
    # an admin route (off here: no admin key); test_adversarial reads it with the key.
    with pytest.raises(InferenceServerException) as off:
        triton.get_model_repository_index()
    assert off.value.status() == "404"


def test_json_tensors_nested_data_and_chosen_outputs(client: httpx.Client) -> None:
    body = {
        "id": "nested",
        "inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [CHURN_ROW]}],
        "outputs": [{"name": "prediction"}],
    }
    # No Content-Type, as tritonclient sends JSON.
    r = client.post("/v2/models/churn/infer", content=httpx.Request("POST", "/", json=body).content)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "nested" and [o["name"] for o in out["outputs"]] == ["prediction"]
    assert out["outputs"][0] == {
        "name": "prediction",
        "datatype": "INT64",
        "shape": [1],
        "data": [1],
    }
    unknown = client.post("/v2/models/churn/infer", json={**body, "outputs": [{"name": "logits"}]})
    assert unknown.status_code == 400 and "unknown output 'logits'" in unknown.json()["error"]
    assert set(unknown.json()) == {"error"}
    broken = client.post("/v2/models/churn/infer", content=b"{not json")
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]


def test_repository_load_needs_the_admin_key(client: httpx.Client) -> None:
    r = client.post("/v2/repository/models/churn/load", json={"parameters": {"version": "1"}})
    assert r.status_code == 404 and set(r.json()) == {"error"}  # no admin key configured


# --- V1 -----------------------------------------------------------------------------------


def test_v1_status_and_metadata(client: httpx.Client) -> None:
    status = client.get("/v1/models/churn").json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("1", "AVAILABLE"), ("2", "AVAILABLE")]
    one = client.get("/v1/models/churn/versions/1").json()["model_version_status"]
    assert [s["version"] for s in one] == ["1"]
    missing = client.get("/v1/models/churn/versions/7")
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    meta = client.get("/v1/models/iris/metadata").json()
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert list(signature["inputs"]) == list(IRIS)
    assert set(signature["outputs"]) == {"probabilities", "prediction"}
    assert meta["model_spec"] == {"name": "iris", "signature_name": "", "version": "1"}


def test_v1_rows_and_columns_equal_the_native_answer(client: httpx.Client) -> None:
    expected = native(client, "churn", [CHURN, CHURN])
    rows = client.post(
        "/v1/models/churn:predict", json={"instances": [CHURN, list(CHURN.values())]}
    )
    assert rows.status_code == 200, rows.text
    assert rows.json() == {
        "predictions": [
            {"probability": expected[0]["probability"], "prediction": expected[0]["prediction"]}
        ]
        * 2
    }
    columns = client.post(
        "/v1/models/churn/versions/2:predict",
        json={"inputs": {k: [v] for k, v in CHURN.items()}},
    )
    assert columns.json() == {
        "outputs": {
            "probability": [expected[0]["probability"]],
            "prediction": [expected[0]["prediction"]],
        }
    }


def test_v1_errors_are_tf_serving_shaped(client: httpx.Client) -> None:
    short = client.post("/v1/models/churn:predict", json={"instances": [[1, 2]]})
    assert short.status_code == 400 and "expected 10 values" in short.json()["error"]
    both = client.post("/v1/models/churn:predict", json={"instances": [], "inputs": {}})
    assert both.status_code == 400 and "exactly one of" in both.json()["error"]
    unknown = client.post("/v1/models/nope:predict", json={"instances": [CHURN]})
    assert unknown.status_code == 404 and unknown.json() == {
        "error": "model 'nope' is not served here"
    }


# --- the README's snippets ------------------------------------------------------------------


def readme_snippet(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    [block] = [b for b in blocks if b.startswith(marker)]
    return block


@pytest.mark.parametrize("marker", ["# V2 client example", "# V1 client example"])
def test_readme_client_snippets_run(
    replica: Server,
    served_repository: Path,
    marker: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = readme_snippet(marker).replace("localhost:8080", replica.url.removeprefix("http://"))
    namespace: dict[str, Any] = {}
    exec(compile(code, f"README.md ({marker})", "exec"), namespace)  # noqa: S102 - our README
    printed = capsys.readouterr().out
    # The demo models are trained when the tests start, and training gives other floats on
    # other CPUs (Intel against AMD), so the answer is compared with torch run now.
    if "V2" in marker:
        features = namespace["features"].tolist()
        expected = torch_reference(served_repository, "churn", "2", features)
        assert namespace["probability"].tolist() == pytest.approx(expected.tolist(), abs=1e-6)
        assert printed.startswith("[0.")
    else:
        rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
        expected = torch_reference(served_repository, "iris", "1", rows).argmax(axis=1)
        assert [p["prediction"] for p in namespace["predictions"]] == expected.tolist()
        assert printed.strip() == str(expected.tolist())
