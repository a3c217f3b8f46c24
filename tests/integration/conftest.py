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

from tests.conftest import Server, add_version, start_replica, stop_process


@pytest.fixture(scope="session")
def served_repository(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("served") / "models"
    shutil.copytree(demo_models, repo, ignore=shutil.ignore_patterns(".built"))
    data = (repo / "churn" / "2" / "model.pt2").read_bytes()
    v3 = add_version(repo, "churn", "2", "3", data=data[: len(data) // 3])  # truncated
    manifest = json.loads((v3 / "model.json").read_text())
    assert hashlib.sha256((v3 / "model.pt2").read_bytes()).hexdigest() != manifest["sha256"]
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
