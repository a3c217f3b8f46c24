"""The prediction log of a real replica with two workers."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.integration.test_api import CHURN
from tests.integration.test_metrics import scrape, value

pytestmark = pytest.mark.integration


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_request_is_logged_once_by_all_workers_into_one_file(
    demo_models: Path, replica_factory: Any, tmp_path: Path
) -> None:
    log_dir = tmp_path / "predictions"
    env = {"MODELGATE_PREDICTION_LOG__DIR": str(log_dir), "MODELGATE_INSTANCE": "api-7"}
    s = replica_factory(demo_models, workers=2, env=env)
    ids = [f"log-{i}-{uuid.uuid4().hex[:6]}" for i in range(24)]
    for i, rid in enumerate(ids[:20]):  # fresh connections: both workers write
        features = {**CHURN, "num_purchases": i}
        r = httpx.post(
            f"{s.url}/predict", json={"features": features}, headers={"X-Request-ID": rid}
        )
        assert r.status_code == 200
    for rid in ids[20:]:
        rows = [CHURN, {**CHURN, "is_premium": True}]
        r = httpx.post(
            f"{s.url}/models/churn/versions/1/predict/batch",
            json={"instances": rows},
            headers={"X-Request-ID": rid},
        )
        assert r.status_code == 200
    bad = httpx.post(f"{s.url}/predict", json={"features": {"age": "x"}})
    assert bad.status_code == 422

    day = datetime.now(UTC).strftime("%Y-%m-%d")
    path = log_dir / f"api-7-{day}.jsonl"
    wait_until(lambda: len(read_log(path)) >= len(ids), 10, "log records written")
    assert sorted(os.listdir(log_dir)) == [path.name]  # one file per replica per day
    records = read_log(path)
    assert sorted(r["request_id"] for r in records) == sorted(ids)  # each once, no 422

    first = next(r for r in records if r["request_id"] == ids[3])
    assert first["schema"] == 1 and first["model"] == "churn" and first["version"] == "2"
    assert first["inputs"] == [{**CHURN, "num_purchases": 3}]
    assert first["outputs"][0]["prediction_class"] in ("stays", "churns")
    assert first["cached"] == [False] and first["latency_ms"] > 0
    assert first["ts"].startswith(day)
    batch = next(r for r in records if r["request_id"] == ids[21])
    assert batch["version"] == "1" and len(batch["inputs"]) == len(batch["outputs"]) == 2
    assert batch["inputs"][1]["is_premium"] is True

    written = value(scrape(s.url), "modelgate_prediction_log_records_total", result="written")
    assert written == len(ids)

    # And one structured access line per request, with the route template (access lines
    # are written in batches, within 50 ms).
    def access_lines() -> list[dict[str, Any]]:
        lines = [json.loads(x) for x in s.log().splitlines() if '"modelgate.access"' in x]
        return [a for a in lines if a.get("request_id") == ids[21]]

    wait_until(lambda: access_lines(), 5, "the access line written")
    [line] = access_lines()
    assert line["route"] == "/models/{name}/versions/{version}/predict/batch"
    assert (line["status"], line["model"], line["version"], line["cache"]) == (
        200,
        "churn",
        "1",
        "miss",
    )
    assert line["latency_ms"] > 0


def test_a_full_disk_costs_the_log_not_the_predictions(
    demo_models: Path, replica_factory: Any, tmp_path: Path
) -> None:
    log_dir = tmp_path / "predictions"
    log_dir.mkdir()
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    # Every write to today's file fails with ENOSPC, like a full disk.
    (log_dir / f"api-8-{day}.jsonl").symlink_to("/dev/full")
    env = {"MODELGATE_PREDICTION_LOG__DIR": str(log_dir), "MODELGATE_INSTANCE": "api-8"}
    s = replica_factory(demo_models, workers=1, env=env)
    answers = [httpx.post(f"{s.url}/predict", json={"features": CHURN}) for _ in range(10)]
    assert [a.status_code for a in answers] == [200] * 10
    wait_until(
        lambda: (
            value(scrape(s.url), "modelgate_prediction_log_records_total", result="failed") == 10
        ),
        10,
        "failures counted",
    )
    assert "prediction log write failed" in s.log() and "No space left" in s.log()
    assert "Traceback" not in s.log()
