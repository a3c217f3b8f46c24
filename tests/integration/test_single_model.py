"""Single-model mode, run the way KServe runs the ServingRuntime in deploy/kserve/: a real
`modelgate serve --model-dir DIR --model-name churn` on a free port, where DIR holds what
the storage initializer would have downloaded (churn/<version>/), answering V1 and V2."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import VENV_BIN, stop_process, wait_until
from tests.integration.test_api import CHURN, row, torch_reference
from tests.ports import free_port

pytestmark = pytest.mark.integration


def serve(model_dir: Path, name: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                *(str(VENV_BIN / "modelgate"), "serve", "--model-dir", str(model_dir)),
                *("--model-name", name, "--host", "127.0.0.1", "--port", str(port)),
                *("--workers", "1"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def mnt_models(demo_models: Path, tmp_path: Path) -> Path:
    """/mnt/models as KServe's storage initializer leaves it for storageUri=…/repo/ where
    repo/ holds churn/ only."""
    mnt = tmp_path / "mnt-models"
    shutil.copytree(demo_models / "churn", mnt / "churn")
    return mnt


@pytest.fixture
def runtime(mnt_models: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "runtime.log"
    proc = serve(mnt_models, "churn", port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200,
            90,
            "single-model runtime",
            proc,
        )
    except Exception:
        stop_process(proc)
        raise RuntimeError(log.read_text()[-4000:]) from None
    yield url
    stop_process(proc)


def test_serves_v1_and_v2_for_the_one_model(runtime: str, mnt_models: Path) -> None:
    expected = torch_reference(mnt_models, "churn", "2", [row(CHURN)])
    with httpx.Client(base_url=runtime, timeout=10) as client:
        # V1 (KServe's v1 protocol is TF Serving's REST shape)
        status = client.get("/v1/models/churn")
        assert status.status_code == 200, status.text
        assert status.json()["model_version_status"][0]["state"] == "AVAILABLE"
        v1 = client.post("/v1/models/churn:predict", json={"instances": [CHURN]})
        assert v1.status_code == 200, v1.text
        v1_probability = v1.json()["predictions"][0]["probability"]
        # V2 (Open Inference Protocol)
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/models/churn/ready").status_code == 200
        body = {
            "inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": row(CHURN)}]
        }
        v2 = client.post("/v2/models/churn/infer", json=body)
        assert v2.status_code == 200, v2.text
        outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
        np.testing.assert_allclose(outputs["probability"], expected.reshape(-1), rtol=1e-5)
        np.testing.assert_allclose([v1_probability], expected.reshape(-1), rtol=1e-4)
        # the one model is the default one, and nothing else is served
        assert client.post("/predict", json={"features": CHURN}).json()["model_name"] == "churn"
        assert client.get("/v2/models/iris/ready").status_code == 404
        assert [m["name"] for m in client.get("/models").json()["models"]] == ["churn"]


def test_a_model_directory_in_place_of_the_repository_is_refused_clearly(
    mnt_models: Path, tmp_path: Path
) -> None:
    """storageUri pointing at churn/ itself (so /mnt/models holds 1/, 2/, …): exit 2 at
    once with a message that says what to change, not a replica that never gets ready."""
    log = tmp_path / "refused.log"
    proc = serve(mnt_models / "churn", "churn", free_port(), log)
    assert proc.wait(30) == 2
    message = log.read_text()
    assert "must hold churn/<version>/" in message
    assert "point storageUri at the directory that holds churn/" in message
