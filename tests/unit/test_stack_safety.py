"""The native stack's Redis password never reaches a command line, and ``stack down``
signals only processes whose recorded start time matches (issue 18, items 3 and 10)."""

from __future__ import annotations

import argparse
import json
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelgate.settings import Settings
from modelgate.stack import launch as stack
from modelgate.stack.config import StackConfig
from modelgate.stack.launch import group_members, start_ticks, stop_pid
from tests.conftest import wait_until


def test_redis_password_is_private_and_off_every_command_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODELGATE_STACK_DIR", str(tmp_path))
    monkeypatch.delenv("MODELGATE_REDIS_PASSWORD_FILE", raising=False)
    config = StackConfig.from_env(argparse.Namespace())
    table = stack.commands(config)
    secret = tmp_path / stack.REDIS_PASSWORD_FILE
    password = secret.read_text().strip()
    assert len(password) >= 32
    for path in (secret, tmp_path / stack.REDIS_CONF_FILE):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"requirepass {password}" in (tmp_path / stack.REDIS_CONF_FILE).read_text()
    for name, argv, env in table:
        assert not any(password in arg for arg in argv), name
        if name.startswith("api-"):
            assert env["MODELGATE_REDIS_PASSWORD_FILE"] == str(secret)
            assert password not in env.values()
    redis_argv = next(argv for name, argv, _ in table if name == "redis")
    assert redis_argv[1] == str(tmp_path / stack.REDIS_CONF_FILE)
    # Generated once per stack: the next `commands` (a restart) keeps it.
    stack.commands(config)
    assert secret.read_text().strip() == password


def test_replica_applies_the_password_file_without_logging_it(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cr/t@:x\n")
    settings = Settings(redis_url="redis://127.0.0.1:6390/0", redis_password_file=secret)
    assert settings.redis_connection_url == "redis://:s3cr%2Ft%40%3Ax@127.0.0.1:6390/0"
    assert settings.redis_url == "redis://127.0.0.1:6390/0"
    assert "s3cr" not in repr(settings) and "s3cr" not in str(settings.model_dump())
    with pytest.raises(ValueError, match="redis_password_file"):
        Settings(redis_password_file=tmp_path / "missing")


@pytest.fixture
def group() -> Iterator[subprocess.Popen[bytes]]:
    """A session leader with a child, as every stack service runs."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import subprocess,sys,time; "
         "subprocess.Popen([sys.executable,'-c','import time; time.sleep(120)']); "
         "time.sleep(120)"],
        start_new_session=True,
    )  # fmt: skip
    wait_until(lambda: len(group_members(proc.pid)) == 2, 20, "leader and child")
    yield proc
    if start_ticks(proc.pid) is not None:
        stop_pid(proc.pid, start_ticks(proc.pid) or -1, timeout=5)
    proc.wait(10)


def test_stop_pid_leaves_a_process_whose_start_time_differs(
    group: subprocess.Popen[bytes],
) -> None:
    started = start_ticks(group.pid)
    assert started is not None
    stop_pid(group.pid, started + 1, timeout=5)  # a recorded time that isn't this process's
    assert group.poll() is None
    assert len(group_members(group.pid)) == 2, "no member of its group may be signalled"
    stop_pid(group.pid, started, timeout=5)
    assert group.wait(10) is not None
    wait_until(lambda: not group_members(group.pid), 20, "group gone")


def test_the_state_file_is_never_read_half_written(tmp_path: Path) -> None:
    """The supervisor rewrites stack.json while clients poll it (a restart, `stack
    status`, the fault suite): every read sees a whole file, the old or the new."""
    config = StackConfig(dir=tmp_path, infra=tmp_path, model_repository=tmp_path)
    running = [stack.Running(f"p{i}", 1000 + i, 1, "x" * 200) for i in range(20)]
    stack.write_state(config, running)
    done = threading.Event()

    def rewrite() -> None:
        for _ in range(300):
            stack.write_state(config, running)
        done.set()

    writer = threading.Thread(target=rewrite)
    writer.start()
    reads = 0
    while not done.is_set():
        data = json.loads((tmp_path / stack.STATE_FILE).read_text())
        assert len(data["processes"]) == 20
        reads += 1
    writer.join()
    assert reads > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [stack.STATE_FILE]  # no temp left
