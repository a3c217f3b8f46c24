"""The whole native stack, started with ``modelgate stack up --detach`` on free ports.

Everything runs for real: redis-server, three gunicorn replicas with two workers each,
nginx rendered from infra/nginx, prometheus from infra/prometheus. Teardown is
``modelgate stack down``, which stops every process by the PID it recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import VENV_BIN, free_port, wait_until

ADMIN_KEY = "stack-admin-key"
CORS_ORIGIN = "https://app.example.test"
PREDICT_LIMIT = 120  # per client per minute; the limit test sends more than this


@dataclass
class Stack:
    dir: Path
    env: dict[str, str]
    gateway: str
    replicas: list[str]
    redis_port: int
    prometheus: str

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "modelgate"), "stack", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    def processes(self) -> dict[str, int]:
        state = json.loads((self.dir / "stack.json").read_text())
        return {p["name"]: p["pid"] for p in state["processes"]}

    def access_log(self) -> list[dict[str, Any]]:
        lines = (self.dir / "logs" / "gateway-access.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def upstream_of(self, request_id: str) -> str:
        """Which replica (host:port) the gateway sent a request to, from its access log.
        nginx writes the line after it has sent the answer, so the client may read the
        log first: wait for the line, then require exactly one."""

        def entries() -> list[dict[str, Any]]:
            return [e for e in self.access_log() if e["request_id"] == request_id]

        wait_until(entries, 5, f"access-log line for {request_id}")
        [entry] = entries()
        return str(entry["upstream"])

    def client(self, source_ip: str = "127.0.0.1") -> httpx.Client:
        """A client calling from ``source_ip``: any 127.x address is loopback on Linux, so
        each test can be its own client for the per-IP quota."""
        transport = httpx.HTTPTransport(local_address=source_ip)
        return httpx.Client(base_url=self.gateway, transport=transport, timeout=30)


def start_stack(models: Path, workdir: Path) -> Stack:
    gateway, status, redis, prometheus, nginx_exp, redis_exp = (free_port() for _ in range(6))
    replicas = [free_port() for _ in range(3)]
    env = {
        **os.environ,
        "MODELGATE_STACK_DIR": str(workdir),
        "MODELGATE_STACK_GATEWAY_PORT": str(gateway),
        "MODELGATE_STACK_GATEWAY_STATUS_PORT": str(status),
        "MODELGATE_STACK_REPLICA_PORTS": ",".join(map(str, replicas)),
        # Two workers per replica whatever the cores: the tests are about many workers.
        "MODELGATE_STACK_WORKERS": "2",
        "MODELGATE_STACK_REDIS_PORT": str(redis),
        "MODELGATE_STACK_PROMETHEUS_PORT": str(prometheus),
        "MODELGATE_STACK_NGINX_EXPORTER_PORT": str(nginx_exp),
        "MODELGATE_STACK_REDIS_EXPORTER_PORT": str(redis_exp),
        "MODELGATE_STACK_GATEWAY_LOG_PORT": str(free_port()),
        "MODELGATE_STACK_GATEWAY_LOG_EXPORTER_PORT": str(free_port()),
        "MODELGATE_STACK_ALERTMANAGER_PORT": str(free_port()),
        "MODELGATE_MODEL_REPOSITORY": str(models),
        "MODELGATE_AUTH__ADMIN_KEY_SHA256": hashlib.sha256(ADMIN_KEY.encode()).hexdigest(),
        "MODELGATE_RATE_LIMIT__PREDICT": f"{PREDICT_LIMIT}/minute",
        "MODELGATE_RATE_LIMIT__BATCH": "60/minute",
        # Only requests with an Origin header see CORS (test_cors.py); the rest don't.
        "MODELGATE_CORS__ALLOW_ORIGINS": f'["{CORS_ORIGIN}"]',
    }
    stack = Stack(
        dir=workdir,
        env=env,
        gateway=f"http://127.0.0.1:{gateway}",
        replicas=[f"http://127.0.0.1:{p}" for p in replicas],
        redis_port=redis,
        prometheus=f"http://127.0.0.1:{prometheus}",
    )
    up = stack.cli("up", "--detach")
    if up.returncode != 0:
        stack.cli("down")
        raise RuntimeError(f"stack up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
    return stack


def stop_stack(stack: Stack) -> None:
    down = stack.cli("down")
    assert down.returncode == 0, down.stderr
    assert not (stack.dir / "stack.json").exists()


@pytest.fixture(scope="session")
def stack_models(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("stack-models") / "models"
    shutil.copytree(demo_models, repo, ignore=shutil.ignore_patterns(".built"))
    return repo


@pytest.fixture(scope="session")
def stack(stack_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack shared by the tests that leave it as they found it."""
    running = start_stack(stack_models, tmp_path_factory.mktemp("stack"))
    yield running
    stop_stack(running)
