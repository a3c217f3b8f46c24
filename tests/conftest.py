"""Fixtures shared by every tier: the demo model repository and real server processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo repository built by `make models`, or a fresh build if it is absent."""
    built = ROOT / "models"
    if (built / ".built").exists():
        return built
    out = tmp_path_factory.mktemp("models")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_models.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture
def model_copy(demo_models: Path, tmp_path: Path) -> Path:
    """A private copy of the demo repository that a test may damage."""
    dest = tmp_path / "models"
    shutil.copytree(demo_models, dest, ignore=shutil.ignore_patterns(".built"))
    return dest


def add_version(repo: Path, name: str, like: str, version: str, data: bytes | None = None) -> Path:
    """A new version directory of ``name``: version ``like``'s manifest renumbered, with
    its model file, or with ``data`` in its place (e.g. bytes that fail the sha256)."""
    source = repo / name / like
    manifest = json.loads((source / "model.json").read_text())
    target = repo / name / version
    target.mkdir()
    (target / "model.json").write_text(json.dumps({**manifest, "version": version}))
    model_file = manifest["file"]
    (target / model_file).write_bytes(
        data if data is not None else (source / model_file).read_bytes()
    )
    return target


def wait_until(
    check: object, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``check()`` until it is truthy; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            if check():  # type: ignore[operator]
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.05)  # polling interval, not a wait for an outcome
    raise TimeoutError(f"{what}: not ready after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM by PID, then SIGKILL if it doesn't exit in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_replica(
    repository: Path,
    log_dir: Path,
    workers: int = 2,
    env: dict[str, str] | None = None,
    timeout: float = 90,
) -> Server:
    """``modelgate serve`` on a free loopback port, returned once /ready answers 200."""
    port = free_port()
    log_path = log_dir / f"replica-{port}.log"
    full_env = {**os.environ, **(env or {})}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "modelgate"),
                "serve",
                "--model-repository",
                str(repository),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/ready", timeout=2).status_code == 200,
            timeout,
            f"replica on {port}",
            proc,
        )
    except Exception:
        stop_process(proc)
        raise RuntimeError(f"replica failed to start:\n{log_path.read_text()[-4000:]}") from None
    return Server(url, port, proc, log_path)


@pytest.fixture
def replica_factory(tmp_path: Path) -> Iterator[object]:
    """Start replicas inside a test; every one is stopped afterwards."""
    started: list[Server] = []

    def start(repository: Path, **kwargs: object) -> Server:
        server = start_replica(repository, tmp_path, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        stop_process(server.proc)


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def commandstats(url: str) -> dict[str, Any]:
    """Redis's per-command call counts (INFO commandstats), read with a client of its own."""
    import redis  # a test-side client, independent of the one under test

    with redis.Redis.from_url(url) as client:
        return dict(client.info("commandstats"))


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def start_redis() -> RedisServer:
    """A private redis-server on a free loopback port, without persistence."""
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: _redis_ping(port), 20, f"redis on {port}", proc)
    return RedisServer(port, proc)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    stop_process(server.proc)
