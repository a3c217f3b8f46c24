"""The benchmark harness can't rot: every scenario runs for one second, with the same
correctness checks as `make bench` (a wrong answer fails the run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.stack


def test_every_scenario_runs_and_reports(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench/run.py"), "--seconds", "1", "--warmup", "0",
         "--rounds", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    seen = {(r["scenario"], r["server"].split(" ")[0]) for r in results}
    assert {s for s, _ in seen} == {"S1", "S2", "S3", "S4", "S5", "S6"}
    assert {("S1", "baseline"), ("S1", "modelgate"), ("S1", "ceiling"), ("S3", "torch")} <= seen
    assert {("S6", "baseline"), ("S6", "stack")} <= seen  # both answered the same ranking
    for r in results:
        assert set(r) >= {"scenario", "server", "rps", "p50_ms", "p99_ms", "non_2xx"}
        assert r["rps"] > 0, r
        assert len(r["rounds"]) == 1, r
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## Targets" in report and "Machine:" in report and "Command:" in report
