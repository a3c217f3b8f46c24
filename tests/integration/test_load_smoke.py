"""`make load` for a few seconds against a real replica: locust's own venv, the
locustfile's user shapes, and the report files the README describes."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, Server

pytestmark = pytest.mark.integration


def test_make_load_runs_bounded_and_writes_the_report(replica: Server, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(ROOT),
            "load",
            f"LOAD_HOST={replica.url}",
            "LOAD_TIME=3s",
            "LOAD_USERS=4",
            f"LOAD_OUT={out}",
        ],
        capture_output=True,
        text=True,
        timeout=300,  # includes installing .venv-locust when `make test` has not
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with (out / "load_stats.csv").open() as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    assert {"/predict", "/models/{name}/predict", "/predict/batch"} <= set(rows)
    total = rows["Aggregated"]
    # Every input the locustfile draws is valid: no 422 (or anything else) in the run.
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0, (
        out / "load_failures.csv"
    ).read_text()
    assert (out / "load.html").stat().st_size > 0
    assert (out / "load_stats_history.csv").exists()
