"""Compose's secrets, run for real without Docker: deploy/compose/init-secrets.sh on
temporary directories, then a real redis-server started from infra/redis/redis.conf with
the auth.conf it wrote (what the `redis` service runs)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, stop_process, wait_until
from tests.ports import free_port

pytestmark = pytest.mark.integration

SCRIPT = ROOT / "deploy/compose/init-secrets.sh"


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    redis, grafana = tmp_path / "redis", tmp_path / "grafana"
    redis.mkdir()
    grafana.mkdir()
    return redis, grafana


def run_init(redis: Path, grafana: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_SECRETS_DIR": str(redis), "GRAFANA_SECRETS_DIR": str(grafana)}
    return subprocess.run(["sh", str(SCRIPT)], env=env, check=True, capture_output=True, text=True)


def test_init_generates_strong_passwords_once(dirs: tuple[Path, Path]) -> None:
    redis, grafana = dirs
    first = run_init(redis, grafana)
    password = (redis / "password").read_text()
    admin = (grafana / "admin-password").read_text()
    for value in (password, admin):
        assert len(value) == 32 and value.isascii() and value.isalnum()
    assert password != admin
    assert (redis / "auth.conf").read_text() == f"requirepass {password}\n"
    for path in (redis / "password", redis / "auth.conf", grafana / "admin-password"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o444, path
    # the passwords are never printed
    assert password not in first.stderr + first.stdout and admin not in first.stderr
    # a second start keeps them: running replicas must not be locked out by a restart
    second = run_init(redis, grafana)
    assert (redis / "password").read_text() == password
    assert (grafana / "admin-password").read_text() == admin
    assert "generated" not in second.stderr
    assert sorted(p.name for p in redis.iterdir()) == ["auth.conf", "password"]


def test_two_fresh_starts_generate_different_passwords(tmp_path: Path) -> None:
    seen = set()
    for i in range(2):
        redis, grafana = tmp_path / f"r{i}", tmp_path / f"g{i}"
        redis.mkdir()
        grafana.mkdir()
        run_init(redis, grafana)
        seen.add((redis / "password").read_text())
    assert len(seen) == 2


def _send(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(command)
        return s.recv(256)


@pytest.fixture
def redis_from_conf(dirs: tuple[Path, Path], tmp_path: Path) -> Iterator[tuple[int, str]]:
    """redis-server with infra/redis/redis.conf, its include pointed at the generated file
    (the container mounts it at the path the file names)."""
    redis, grafana = dirs
    run_init(redis, grafana)
    conf = (ROOT / "infra/redis/redis.conf").read_text()
    conf = conf.replace("/run/secrets/modelgate/redis/auth.conf", str(redis / "auth.conf"))
    path = tmp_path / "redis.conf"
    path.write_text(conf)
    port = free_port()
    proc = subprocess.Popen(
        # Arguments after the file override it: loopback and a free port, never 6379.
        [
            *(shutil.which("redis-server") or "/usr/bin/redis-server", str(path)),
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _send(port, b"PING\r\n").startswith(b"-NOAUTH"), 20, "redis", proc)
        yield port, (redis / "password").read_text()
    finally:
        stop_process(proc)


def test_redis_requires_the_generated_password(redis_from_conf: tuple[int, str]) -> None:
    import redis as redis_client

    port, password = redis_from_conf
    assert _send(port, b"PING\r\n").startswith(b"-NOAUTH")
    assert _send(port, b"AUTH wrong-password\r\n").startswith(b"-WRONGPASS")
    with redis_client.Redis(port=port, password=password) as client:
        assert client.ping()
        config = client.config_get("maxmemory-policy")
        assert config == {"maxmemory-policy": "volatile-lru"}
        assert client.config_get("save") == {"save": ""}
