"""The MLflow Model Registry as a model source, against a real `mlflow server`.

The server runs with a SQLite backend store and a local artifact root on a free loopback
port. Versions carry modelgate's own files (never an MLflow flavour); a replica follows an
alias, every worker converges when it moves, and a tampered artifact is refused while the
fleet keeps what it serves.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelgate.inference.registry import MlflowRegistry, ModelRef
from tests.conftest import ROOT, VENV_BIN, RedisServer, Server, wait_until
from tests.ports import free_port

pytestmark = pytest.mark.integration


@dataclass
class Mlflow:
    url: str
    proc: subprocess.Popen[bytes]

    def set_alias(self, name: str, alias: str, version: str) -> None:
        body = json.dumps({"name": name, "alias": alias, "version": version}).encode()
        request = urllib.request.Request(
            f"{self.url}/api/2.0/mlflow/registered-models/alias",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mlflow]:
    server = ROOT / ".venv-mlflow" / "bin" / "mlflow"  # `make test` installs it
    assert server.exists(), f"{server} is missing: run `make test` (it installs the server)"
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    with (root / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                str(server),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,  # its own process group: the server and its workers
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200,
            180,
            "mlflow server",
            proc,
        )
        yield Mlflow(url, proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the group this fixture started, by PID
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture(scope="module")
def registered(
    mlflow: Mlflow, demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """churn v1 (TorchScript) and v2 (torch.export) from the demo repository, and a v3
    whose model file was tampered with after its manifest was written."""
    client = MlflowRegistry(mlflow.url)
    versions = {
        "ts": client.register("churn", demo_models / "churn" / "1"),
        "pt2": client.register("churn", demo_models / "churn" / "2"),
    }
    tampered = tmp_path_factory.mktemp("tampered") / "churn" / "2"
    shutil.copytree(demo_models / "churn" / "2", tampered)
    data = (tampered / "model.pt2").read_bytes()
    (tampered / "model.pt2").write_bytes(data[: len(data) // 2])
    versions["tampered"] = client.register("churn", tampered)
    return versions


def test_pull_fetches_verifies_and_is_idempotent(
    mlflow: Mlflow, registered: dict[str, str], tmp_path: Path
) -> None:
    mlflow.set_alias("churn", "staging", registered["pt2"])
    repo = tmp_path / "models"
    cmd = [
        str(VENV_BIN / "modelgate"),
        "pull",
        "models:/churn@staging",
        "--into",
        str(repo),
        "--mlflow-tracking-uri",
        mlflow.url,
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    version_dir = repo / "churn" / registered["pt2"]
    assert "added" in first.stdout and sorted(p.name for p in version_dir.iterdir()) == [
        "model.json",
        "model.pt2",
    ]
    manifest = json.loads((version_dir / "model.json").read_text())
    assert manifest["version"] == registered["pt2"]
    assert manifest["metadata"]["registry"]["version"] == registered["pt2"]

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already there" in again.stdout

    bad = subprocess.run(
        [*cmd[:2], f"models:/churn/{registered['tampered']}", *cmd[3:]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "sha256" in bad.stderr
    assert sorted(p.name for p in (repo / "churn").iterdir()) == [registered["pt2"]]


def test_references_are_validated() -> None:
    for text in (
        "models:/../x@a",
        "models:/churn",
        "models:/churn/01x",
        "runs:/abc/model",
        "models:/Churn@a",
    ):
        with pytest.raises(Exception, match="expected models:/"):
            ModelRef.parse(text)


def served_versions(url: str) -> list[str]:
    fleet = httpx.get(f"{url}/models/churn", timeout=5).json()["fleet"]
    return sorted({w["default_version"] for w in fleet})


def test_replicas_follow_an_alias_and_refuse_a_tampered_version(
    mlflow: Mlflow,
    registered: dict[str, str],
    tmp_path: Path,
    redis_server: RedisServer,
    replica_factory: Callable[..., Server],
) -> None:
    mlflow.set_alias("churn", "champion", registered["ts"])
    repo = tmp_path / "models"
    repo.mkdir()  # empty: everything served comes from the registry
    server = replica_factory(
        repo,
        workers=2,
        env={
            "MODELGATE_REDIS_URL": redis_server.url,
            "MODELGATE_MLFLOW__TRACKING_URI": mlflow.url,
            "MODELGATE_MLFLOW__FOLLOW": '["churn@champion"]',
            "MODELGATE_MLFLOW__POLL_SECONDS": "0.5",
        },
    )
    row = {"features": [35, 75000, 680, 24, 730, 85.5, 2, False, 2, 3]}
    first = httpx.post(f"{server.url}/predict", json=row, timeout=10)
    assert first.status_code == 200 and first.json()["model_version"] == registered["ts"]

    mlflow.set_alias("churn", "champion", registered["pt2"])
    wait_until(
        lambda: served_versions(server.url) == [registered["pt2"]],
        30,
        "every worker on the alias's new version",
    )
    for _ in range(10):
        r = httpx.post(f"{server.url}/predict", json=row, timeout=10)
        assert r.status_code == 200 and r.json()["model_version"] == registered["pt2"]

    mlflow.set_alias("churn", "champion", registered["tampered"])
    wait_until(
        lambda: httpx.get(f"{server.url}/health", timeout=5).json()["load_failures"],
        30,
        "the tampered version refused",
    )
    assert served_versions(server.url) == [registered["pt2"]]
    assert not (repo / "churn" / registered["tampered"]).exists()
    r = httpx.post(f"{server.url}/predict", json=row, timeout=10)
    assert r.status_code == 200 and r.json()["model_version"] == registered["pt2"]
