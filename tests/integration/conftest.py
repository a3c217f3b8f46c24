"""A real replica (gunicorn master + 2 uvicorn workers) shared by the module's tests.

Its repository is a copy of the demo models plus a damaged churn v3, so every test also
checks that one refused version doesn't stop the replica from serving the rest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, start_replica, stop_process


@pytest.fixture(scope="session")
def served_repository(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("served") / "models"
    shutil.copytree(demo_models, repo, ignore=shutil.ignore_patterns(".built"))
    v3 = repo / "churn" / "3"
    shutil.copytree(repo / "churn" / "2", v3)
    manifest = json.loads((v3 / "model.json").read_text())
    manifest["version"] = "3"
    (v3 / "model.json").write_text(json.dumps(manifest))
    data = (v3 / "model.pt2").read_bytes()
    (v3 / "model.pt2").write_bytes(data[: len(data) // 3])  # truncated: sha256 mismatch
    assert hashlib.sha256(data[: len(data) // 3]).hexdigest() != manifest["sha256"]
    return repo


@pytest.fixture(scope="session")
def replica(served_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_replica(served_repository, tmp_path_factory.mktemp("logs"), workers=2)
    yield server
    stop_process(server.proc)


@pytest.fixture
def client(replica: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=replica.url, timeout=10) as c:
        yield c
