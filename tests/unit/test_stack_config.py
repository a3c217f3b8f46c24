"""The native stack's sizing: the cores this process may use, shared among the replicas."""

from __future__ import annotations

import argparse

import pytest

from modelgate import stack
from modelgate.stack import StackConfig, workers_per_replica


@pytest.mark.parametrize(
    ("cores", "ports", "workers"),
    [(2, "8001,8002,8003", 1), (8, "8001,8002,8003", 2), (12, "1,2,3", 4), (1, "1,2,3", 1),
     (4, "8001", 4), (4, "8001, 8002,", 2)],
)  # fmt: skip
def test_workers_share_the_cores_at_least_one_each(
    monkeypatch: pytest.MonkeyPatch, cores: int, ports: str, workers: int
) -> None:
    monkeypatch.setattr(stack.os, "sched_getaffinity", lambda _pid: set(range(cores)))
    assert workers_per_replica(ports) == workers


def test_an_explicit_worker_count_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack.os, "sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.setenv("MODELGATE_STACK_REPLICA_PORTS", "8001,8002,8003")
    monkeypatch.delenv("MODELGATE_STACK_WORKERS", raising=False)
    assert StackConfig.from_env(argparse.Namespace()).workers == 2
    monkeypatch.setenv("MODELGATE_STACK_WORKERS", "3")
    assert StackConfig.from_env(argparse.Namespace()).workers == 3
