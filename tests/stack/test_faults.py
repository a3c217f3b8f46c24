"""Faults on a stack of its own: Redis dies, then a replica dies; clients keep getting 200,
and the stack's supervisor starts the replica again."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelgate.stack.launch import group_members, live_stat
from tests.conftest import wait_until
from tests.stack.conftest import Stack, start_stack, stop_stack

pytestmark = pytest.mark.stack

CHURN = [35, 75000, 680, 24, 730, 85.5, 2, False, 2, 3]


@pytest.fixture(scope="module")
def doomed(stack_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(stack_models, tmp_path_factory.mktemp("doomed"))
    yield running
    stop_stack(running)


def gone(pid: int) -> bool:
    return live_stat(pid) is None  # no such process, or a zombie: exited all the same


def port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def test_redis_dies_and_predictions_keep_answering(doomed: Stack) -> None:
    with doomed.client("127.0.0.20") as c:
        warm = c.post("/predict", json={"features": CHURN})
        assert warm.status_code == 200
        wait_until(
            lambda: c.post("/predict", json={"features": CHURN}).headers["x-cache"] == "HIT",
            10,
            "a cached answer",
        )

        pid = doomed.processes()["redis"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: gone(pid), 10, "redis gone")

        started = time.monotonic()
        answers = [
            c.post("/predict", json={"features": [35, 75000 + i, *CHURN[2:]]}) for i in range(30)
        ]
        elapsed = time.monotonic() - started
    assert [a.status_code for a in answers] == [200] * 30
    assert {a.headers["x-cache"] for a in answers} == {"MISS"}
    assert {a.json()["model_name"] for a in answers} == {"churn"}
    # Timeouts are short and breakers open: a dead Redis costs little per request.
    assert elapsed < 10, elapsed


def test_a_replica_dies_and_the_gateway_keeps_answering(doomed: Stack) -> None:
    pid = doomed.processes()["api-2"]
    workers = group_members(pid)
    assert len(workers) == 3  # the master and its two workers
    os.kill(pid, signal.SIGKILL)  # the master dies without a word to its workers …
    # … and they follow it out instead of serving on as orphans.
    wait_until(lambda: all(gone(w) for w in workers), 30, "api-2 and its workers gone")
    with doomed.client("127.0.0.21") as c:
        answers = [c.post("/predict", json={"features": CHURN}) for _ in range(30)]
        # Fresh connections too, so nginx has to choose an upstream each time.
        for _ in range(10):
            with doomed.client("127.0.0.21") as fresh:
                answers.append(fresh.post("/predict", json={"features": CHURN}))
    assert [a.status_code for a in answers] == [200] * 40
    assert all(0 <= a.json()["probability"] <= 1 for a in answers)
    # The stack's supervisor starts it again, under a new PID, and it becomes ready.
    wait_until(lambda: doomed.processes()["api-2"] != pid, 30, "api-2 started again")

    def api_2_ready() -> bool:
        lines = doomed.cli("status").stdout.splitlines()
        return " ready " in next(line for line in lines if line.startswith("api-2"))

    wait_until(api_2_ready, 120, "api-2 ready again")
    assert port_open(doomed.replicas[1])
