"""The prediction log's hand-over: records of one loop turn travel together, and past
max_queue waiting records the rest are dropped and counted, never blocking."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from modelgate.inference.manifest import Manifest
from modelgate.observability.predlog import PredictionLog, Record, Rotation
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


def big_record(i: int, rows: int) -> Record:
    return Record(
        ts=time.time(),
        request_id=f"big{i}",
        manifest=MANIFEST,
        rows=np.ones((rows, 3), dtype=np.float32),
        outputs=[{"prediction": 1}] * rows,
        cached=[False] * rows,
        latency_ms=0.5,
    )


def test_the_queue_is_bounded_in_bytes_as_well_as_records(tmp_path: Path) -> None:
    """Ten 1000-row records are few records but megabytes: the byte bound drops them."""
    counts: dict[str, int] = {}
    log = PredictionLog(
        tmp_path,
        "api-test",
        max_queue=10_000,
        max_queue_bytes=1_000_000,
        on_result=lambda result, n: counts.__setitem__(result, counts.get(result, 0) + n),
    )

    async def one_turn() -> None:
        for i in range(10):
            log.append(big_record(i, 1000))
        await asyncio.sleep(0)

    asyncio.run(one_turn())
    log.close()
    # 1000 rows x (12 bytes of inputs + 256 of outputs) + 512: ~269 KB each, 3 fit in 1 MB.
    assert counts == {"dropped": 7, "written": 3}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write(log: PredictionLog, records: list[Record]) -> None:
    log._write(records)  # the writer thread's step, called directly: no timing involved


def test_files_rotate_by_size_and_by_time_and_the_oldest_go_first(tmp_path: Path) -> None:
    clock = Clock(1_780_000_000.0)  # 2026-05-28T20:26:40Z
    rotation = Rotation(rotate_s=3600, max_file_bytes=4000, max_total_bytes=12_000, clock=clock)
    log = PredictionLog(tmp_path, "api-1", rotation=rotation)
    # A neighbour whose name starts like ours is never counted nor deleted.
    (tmp_path / "api-10-2026-05-28T200000.jsonl").write_bytes(b"x" * 50_000)
    try:
        write(log, [record(i) for i in range(10)])  # ~2.4 KB
        [first] = sorted(tmp_path.glob("api-1-*.jsonl"))
        assert first.name == "api-1-2026-05-28T200000.jsonl"  # the hour slot's start
        write(log, [record(i) for i in range(10, 20)])  # past 4000 bytes: the next rotates
        write(log, [record(20)])
        names = sorted(p.name for p in tmp_path.glob("api-1-*.jsonl"))
        assert len(names) == 2 and first.name in names
        rotated = next(n for n in names if n != first.name)
        assert re.fullmatch(r"api-1-2026-05-28T200000\.\d{12}\.jsonl", rotated)
        assert first.read_text().count("\n") == 1  # the fresh file: record 20
        clock.now += 3600  # the next hour: a new file by time
        write(log, [record(21)])
        assert (tmp_path / "api-1-2026-05-28T210000.jsonl").exists()
        # Fill past the 12 KB total: the oldest files go, never the one being written.
        for _ in range(8):
            clock.now += 1
            log._next_cap_check = 0.0
            write(log, [record(100 + j) for j in range(20)])
        files = sorted(tmp_path.glob("api-1-*.jsonl"))
        assert sum(p.stat().st_size for p in files) <= 12_000
        assert (tmp_path / "api-1-2026-05-28T210000.jsonl").exists()
        assert not (tmp_path / rotated).exists()  # the oldest went first
        lines = [json.loads(x) for p in files for x in p.read_text().splitlines()]
        assert all(x["request_id"].startswith("r") for x in lines)  # whole lines only
    finally:
        log.close()
    assert (tmp_path / "api-10-2026-05-28T200000.jsonl").stat().st_size == 50_000


def test_a_worker_follows_a_file_another_worker_rotated(tmp_path: Path) -> None:
    """Two writers on one replica's file (two workers): when one rotates it, the other's
    next batch goes to the fresh file, and no line is lost."""
    clock = Clock(1_780_000_000.0)
    rotation = Rotation(max_file_bytes=3000, max_total_bytes=10**9, clock=clock)
    a = PredictionLog(tmp_path, "api-2", rotation=rotation)
    b = PredictionLog(tmp_path, "api-2", rotation=rotation)
    try:
        write(a, [record(i) for i in range(15)])
        write(b, [record(i) for i in range(15, 16)])
        write(a, [record(i) for i in range(16, 17)])  # a rotates the full file
        write(b, [record(i) for i in range(17, 18)])  # b follows it
        active = tmp_path / "api-2-2026-05-28.jsonl"
        ids = [json.loads(x)["request_id"] for x in active.read_text().splitlines()]
        assert ids == ["r16", "r17"]
        everything = [
            json.loads(x)["request_id"]
            for p in tmp_path.glob("api-2-*.jsonl")
            for x in p.read_text().splitlines()
        ]
        assert sorted(everything) == sorted(f"r{i}" for i in range(18))
    finally:
        a.close()
        b.close()


def test_the_total_must_hold_two_files() -> None:
    with pytest.raises(ValueError, match="twice"):
        Settings(prediction_log={"max_file_bytes": 10_000, "max_total_bytes": 15_000})


def test_a_short_write_leaves_no_torn_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk takes part of a batch: the part is cut off, the file ends on a line."""
    counts: dict[str, int] = {}
    log = PredictionLog(
        tmp_path,
        "api-9",
        on_result=lambda result, n: counts.__setitem__(result, counts.get(result, 0) + n),
    )
    try:
        write(log, [record(0)])
        real_write = os.write

        def half(fd: int, data: bytes) -> int:
            return real_write(fd, data[: len(data) // 2])

        monkeypatch.setattr(os, "write", half)
        write(log, [record(1), record(2)])
        monkeypatch.setattr(os, "write", real_write)
        write(log, [record(3)])
    finally:
        log.close()
    [path] = tmp_path.glob("api-9-*.jsonl")
    ids = [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
    assert ids == ["r0", "r3"]
    assert counts == {"written": 2, "failed": 2}
