"""The native stack's sizing: the cores this process may use, shared among the replicas."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from modelgate.stack import launch as stack
from modelgate.stack.config import StackConfig, workers_per_replica


@pytest.mark.parametrize(
    ("cores", "ports", "workers"),
    [(2, "8001,8002,8003", 1), (8, "8001,8002,8003", 2), (12, "1,2,3", 4), (1, "1,2,3", 1),
     (4, "8001", 4), (4, "8001, 8002,", 2)],
)  # fmt: skip
def test_workers_share_the_cores_at_least_one_each(
    monkeypatch: pytest.MonkeyPatch, cores: int, ports: str, workers: int
) -> None:
    monkeypatch.setattr(stack.os, "sched_getaffinity", lambda _pid: set(range(cores)))
    monkeypatch.setenv("MODELGATE_STACK_REPLICA_PORTS", ports)
    monkeypatch.delenv("MODELGATE_STACK_WORKERS", raising=False)
    config = StackConfig()
    assert len(config.replica_ports) == len([p for p in ports.split(",") if p.strip()])
    assert config.workers == workers_per_replica(len(config.replica_ports)) == workers


def test_an_explicit_worker_count_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack.os, "sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.setenv("MODELGATE_STACK_REPLICA_PORTS", "8001,8002,8003")
    monkeypatch.delenv("MODELGATE_STACK_WORKERS", raising=False)
    assert StackConfig.from_env(argparse.Namespace()).workers == 2
    monkeypatch.setenv("MODELGATE_STACK_WORKERS", "3")
    assert StackConfig.from_env(argparse.Namespace()).workers == 3


def test_the_gateway_flood_guard_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A load test from one address raises the per-IP guard; nothing else changes it."""
    monkeypatch.setenv("MODELGATE_STACK_DIR", str(tmp_path))
    site = tmp_path / "nginx" / "gateway.conf"

    stack.commands(StackConfig.from_env(argparse.Namespace()))
    assert "rate=10000r/s;" in site.read_text()
    assert "burst=20000 nodelay;" in site.read_text()

    monkeypatch.setenv("MODELGATE_STACK_GATEWAY_REQ_PER_IP", "500000")
    monkeypatch.setenv("MODELGATE_STACK_GATEWAY_REQ_BURST", "900000")
    stack.commands(StackConfig.from_env(argparse.Namespace()))
    assert "rate=500000r/s;" in site.read_text()
    assert "burst=900000 nodelay;" in site.read_text()
