"""The fault suite's stacks, settings and results table.

Collected only by ``make test-faults`` (MODELGATE_FAULTS=1): these tests take minutes
and load the machine, so ``make test`` leaves them out.

Durations come from the environment so that a longer run needs no edit:
FAULTS_SOAK_S (F13, default 180), FAULTS_KEEPALIVE_ROUNDS (F7, default 1),
FAULTS_OVERLOAD_S (F10, default 30).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.faults.load import Answer
from tests.faults.oracle import latency_ms, non_2xx
from tests.ports import free_port
from tests.stack.conftest import Stack

if not os.environ.get("MODELGATE_FAULTS"):
    collect_ignore_glob = ["test_*.py"]

ADMIN_KEY = "faults-admin-key"
RESULTS = Path(__file__).with_name("RESULTS.md")


@dataclass(frozen=True)
class Durations:
    soak_s: float = float(os.environ.get("FAULTS_SOAK_S", "180"))
    keepalive_rounds: int = int(os.environ.get("FAULTS_KEEPALIVE_ROUNDS", "1"))
    overload_s: float = float(os.environ.get("FAULTS_OVERLOAD_S", "30"))


@pytest.fixture(scope="session")
def durations() -> Durations:
    return Durations()


@dataclass
class FaultStack(Stack):
    tmpfs: Path | None = None  # the prediction log's own small filesystem, if mounted

    def pid(self, name: str) -> int:
        return self.processes()[name]

    @property
    def gateway_port(self) -> int:
        return int(self.gateway.rsplit(":", 1)[1])


def mount_tmpfs(path: Path, size: str) -> bool:
    """A small filesystem for the prediction log (F12 fills it). Needs root; without it
    F12 falls back to a file that answers ENOSPC (see test_faults.py)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def start_fault_stack(
    models: Path, workdir: Path, workers: int, extra: dict[str, str], tmpfs: bool = False
) -> FaultStack:
    gateway, status, redis, prometheus, nginx_exp, redis_exp = (free_port() for _ in range(6))
    replicas = [free_port() for _ in range(3)]
    # A copy of infra/, so that R1 can break the gateway's template and see it refused.
    infra = workdir.parent / "infra"
    shutil.copytree(ROOT / "infra", infra)
    env = {
        **os.environ,
        "MODELGATE_STACK_DIR": str(workdir),
        "MODELGATE_STACK_INFRA": str(infra),
        "MODELGATE_STACK_GATEWAY_PORT": str(gateway),
        "MODELGATE_STACK_GATEWAY_STATUS_PORT": str(status),
        "MODELGATE_STACK_REPLICA_PORTS": ",".join(map(str, replicas)),
        "MODELGATE_STACK_WORKERS": str(workers),
        "MODELGATE_STACK_REDIS_PORT": str(redis),
        "MODELGATE_STACK_PROMETHEUS_PORT": str(prometheus),
        "MODELGATE_STACK_NGINX_EXPORTER_PORT": str(nginx_exp),
        "MODELGATE_STACK_REDIS_EXPORTER_PORT": str(redis_exp),
        "MODELGATE_STACK_GATEWAY_LOG_PORT": str(free_port()),
        "MODELGATE_STACK_GATEWAY_LOG_EXPORTER_PORT": str(free_port()),
        "MODELGATE_STACK_ALERTMANAGER_PORT": str(free_port()),
        "MODELGATE_MODEL_REPOSITORY": str(models),
        "MODELGATE_AUTH__ADMIN_KEY_SHA256": hashlib.sha256(ADMIN_KEY.encode()).hexdigest(),
        # Quotas on (they are part of F4/F5), high enough never to bind this load.
        "MODELGATE_RATE_LIMIT__PREDICT": "10000000/minute",
        "MODELGATE_RATE_LIMIT__BATCH": "10000000/minute",
        "MODELGATE_LOG_LEVEL": "WARNING",
        # The prediction log's own caps keep it inside F12's 64 MiB tmpfs (3 replicas x
        # 16 MiB): without them F13's soak (~100k lines, ~650 B each on a fast machine)
        # filled the disk and every later fault found its answers unlogged.
        "MODELGATE_PREDICTION_LOG__MAX_FILE_BYTES": str(4 << 20),
        "MODELGATE_PREDICTION_LOG__MAX_TOTAL_BYTES": str(16 << 20),
        **extra,
    }
    mounted = None
    if tmpfs and mount_tmpfs(workdir / "predictions", "64m"):
        mounted = workdir / "predictions"
    stack = FaultStack(
        dir=workdir,
        env=env,
        gateway=f"http://127.0.0.1:{gateway}",
        replicas=[f"http://127.0.0.1:{p}" for p in replicas],
        redis_port=redis,
        prometheus=f"http://127.0.0.1:{prometheus}",
        tmpfs=mounted,
    )
    up = stack.cli("up", "--detach")
    if up.returncode != 0:
        stop_fault_stack(stack)
        raise RuntimeError(f"stack up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
    return stack


def stop_fault_stack(stack: FaultStack) -> None:
    down = stack.cli("down")
    if stack.tmpfs is not None:
        subprocess.run(["umount", str(stack.tmpfs)], capture_output=True, check=False)
    assert down.returncode == 0, down.stderr


@pytest.fixture(scope="session")
def fault_models(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private repository: F8/F9 add versions to it."""
    repo = tmp_path_factory.mktemp("fault-models") / "models"
    shutil.copytree(demo_models, repo, ignore=shutil.ignore_patterns(".built"))
    return repo


@pytest.fixture(scope="session")
def stack(fault_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """The stack most faults run on, one after another: each leaves it healthy."""
    running = start_fault_stack(
        fault_models, tmp_path_factory.mktemp("faults") / "stack", workers=1, extra={}, tmpfs=True
    )
    yield running
    stop_fault_stack(running)


# --- the results table -------------------------------------------------------------------


@dataclass
class Row:
    fault: str
    load: str
    answers: list[Answer] = field(default_factory=list)
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)  # name: (start, end)
    extra: dict[str, Any] = field(default_factory=dict)
    result: str = "not run"

    def p(self, window: str) -> str:
        start, end = self.windows.get(window, (0.0, 0.0))
        chosen = [a for a in self.answers if start <= a.sent < end]
        if not chosen:
            return "–"
        return f"{latency_ms(chosen, 50):g} / {latency_ms(chosen, 99):g}"


@dataclass
class Results:
    rows: dict[str, Row] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def row(self, nodeid: str, fault: str, load: str) -> Row:
        self.rows[nodeid] = Row(fault, load)
        return self.rows[nodeid]

    def write(self) -> None:
        lines = [
            "# Fault suite results",
            "",
            "Written by `make test-faults` (tests/faults/) from its last run; p50 / p99 in",
            "ms of 2xx answers, by the window of the fault's timeline each request was sent in.",
            f"Run at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(self.started))}, "
            f"{os.cpu_count()} cores (shared), {round(time.time() - self.started)} s in all.",
            "",
            "| fault | result | load | requests | non-2xx | p50/p99 before | during | after "
            "| figures |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in self.rows.values():
            bad = ", ".join(f"{k}: {v}" for k, v in non_2xx(row.answers).items()) or "0"
            figures = "; ".join(f"{k} {v}" for k, v in row.extra.items())
            lines.append(
                f"| {row.fault} | {row.result} | {row.load} | {len(row.answers)} | {bad} "
                f"| {row.p('before')} | {row.p('during')} | {row.p('after')} | {figures} |"
            )
        RESULTS.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def results(request: pytest.FixtureRequest) -> Iterator[Results]:
    table = Results()
    request.config.stash[RESULTS_KEY] = table
    yield table
    table.write()


RESULTS_KEY = pytest.StashKey[Results]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    table = item.config.stash.get(RESULTS_KEY, None)
    if table is not None and item.nodeid in table.rows and report.when == "call":
        table.rows[item.nodeid].result = "pass" if report.passed else "**FAIL**"
    return report


@pytest.fixture
def row(request: pytest.FixtureRequest, results: Results) -> Row:
    """This test's row: the fault's id and title from its docstring's first line."""
    doc = (request.function.__doc__ or request.node.name).strip().splitlines()[0]
    return results.row(request.node.nodeid, doc, "")


def dump_json(path: Path, data: Any) -> None:
    with contextlib.suppress(OSError):
        path.write_text(json.dumps(data, indent=2))


__all__ = ["ROOT", "FaultStack", "Row", "start_fault_stack", "stop_fault_stack"]
