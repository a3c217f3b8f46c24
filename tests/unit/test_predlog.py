"""The prediction log's hand-over: records of one loop turn travel together, and past
max_queue waiting records the rest are dropped and counted, never blocking."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from modelgate.manifest import Manifest
from modelgate.predlog import PredictionLog, Record
from modelgate.settings import Settings
from tests.unit.manifests import manifest_dict

MANIFEST = Manifest.model_validate(manifest_dict())


def record(i: int) -> Record:
    return Record(
        ts=time.time(),
        request_id=f"r{i}",
        manifest=MANIFEST,
        rows=np.array([[30, 1.5, 1]], dtype=np.float32),
        outputs=[{"prediction": 1}],
        cached=[False],
        latency_ms=0.5,
    )


def test_one_turn_is_one_hand_over_and_overflow_is_dropped(tmp_path: Path) -> None:
    counts: dict[str, int] = {}

    def count(result: str, n: int) -> None:
        counts[result] = counts.get(result, 0) + n

    log = PredictionLog(tmp_path, "api-test", max_queue=5, on_result=count)
    handed: list[int] = []
    put = log._queue.put
    log._queue.put = lambda item, *a, **k: (handed.append(len(item or [])), put(item, *a, **k))  # type: ignore[method-assign]

    async def one_turn() -> None:
        for i in range(8):
            log.append(record(i))
        await asyncio.sleep(0)  # the next turn: the hand-over

    asyncio.run(one_turn())
    log.close()
    assert handed[0] == 5  # one queue item for the turn's records
    assert counts == {"dropped": 3, "written": 5}
    [path] = tmp_path.glob("api-test-*.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [x["request_id"] for x in lines] == ["r0", "r1", "r2", "r3", "r4"]
    assert lines[0]["inputs"] == [{"age": 30, "income": 1.5, "is_premium": True}]
    # Declared types, not the float32 the model saw: 30, not 30.0; true, not 1.0.
    assert '"inputs":[{"age":30,"income":1.5,"is_premium":true}]' in path.read_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", lines[0]["ts"])
    assert path.name == f"api-test-{lines[0]['ts'][:10]}.jsonl"


def test_an_empty_directory_setting_turns_the_log_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the working directory: compose users blank the variable to override a default."""
    monkeypatch.setenv("MODELGATE_PREDICTION_LOG__DIR", "")
    assert Settings().prediction_log.dir is None
    monkeypatch.setenv("MODELGATE_PREDICTION_LOG__DIR", "/var/log/predictions")
    assert Settings().prediction_log.dir == Path("/var/log/predictions")
