"""The prediction log: every answered request as one JSON line, for monitoring (drift,
traffic mix) and for retraining.

Files are ``<dir>/<instance>-<YYYY-MM-DD>.jsonl`` (UTC days): one per replica per day,
written by all of the replica's workers. Each worker appends whole batches of lines with
one ``write`` on an ``O_APPEND`` descriptor, so lines from different workers never
interleave.

The request path only appends a record to a list; the records of 50 ms (or 500 records)
are handed to a background thread together, which formats and writes them: one queue
item and one thread wake-up for all of them. (Per event-loop turn, as it was, meant
hundreds of wake-ups a second under load, each a GIL hand-off: ~5 % of a replica.)
More than ``max_queue`` records waiting drops the record, and a full disk or an
unwritable directory drops the batch; both are counted and logged (at most once a
minute), and never fail a prediction or slow it down.

One line (schema version 1):

    {"schema": 1, "ts": "2026-11-22T03:12:45.123Z", "request_id": "…", "instance": "api-1",
     "model": "churn", "version": "2", "latency_ms": 1.9,
     "inputs": [{"age": 35, "income": 75000.0, …}], "outputs": [{"prediction": 1, …}],
     "cached": [false]}

``inputs``, ``outputs`` and ``cached`` hold one element per row of the request, in order;
``latency_ms`` is the time from the cache lookup to the model's answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from modelgate.coalesce import NextTurn
from modelgate.manifest import Manifest
from modelgate.timefmt import iso_utc

log = logging.getLogger("modelgate.predlog")

SCHEMA_VERSION = 1
HAND_OVER_AFTER_S = 0.05
HAND_OVER_RECORDS = 500
_ERROR_LOG_INTERVAL_S = 60.0


@dataclass(slots=True)
class Record:
    ts: float  # epoch seconds
    request_id: str
    manifest: Manifest
    rows: np.ndarray
    outputs: list[dict[str, Any]]
    cached: list[bool]
    latency_ms: float


def named_inputs(manifest: Manifest, rows: np.ndarray) -> list[dict[str, Any]]:
    """Rows (float32, manifest order) back to named values of their declared types. The
    writer thread formats every answered request: the names and the integer and boolean
    columns come from the manifest (worked out once), not from each value's spec."""
    names = manifest.input_names
    out = []
    for row in rows.tolist():
        for i in manifest.int_columns:
            row[i] = int(row[i])
        for i in manifest.bool_columns:
            row[i] = bool(row[i])
        out.append(dict(zip(names, row, strict=True)))
    return out


class PredictionLog:
    def __init__(
        self,
        directory: Path,
        instance: str,
        max_queue: int = 10_000,
        on_result: Callable[[str, int], None] | None = None,
    ) -> None:
        self.directory = directory
        self.instance = instance
        self.on_result = on_result  # ("written" | "dropped" | "failed", records)
        self.max_queue = max_queue
        self._turn: NextTurn[Record] = NextTurn(
            self._hand_over, after_s=HAND_OVER_AFTER_S, max_items=HAND_OVER_RECORDS
        )
        self._waiting = 0  # handed over, not yet written; under _lock (two threads)
        self._lock = threading.Lock()
        self._queue: queue.Queue[list[Record] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._fd: int | None = None
        self._day = ""
        self._last_error_log = 0.0
        self._thread.start()

    def append(self, record: Record) -> None:
        """Never blocks: past ``max_queue`` waiting records, the record is dropped."""
        if self._waiting + len(self._turn) >= self.max_queue:
            self._count("dropped", 1)
            self._warn("prediction log queue full; dropping records")
            return
        self._turn.add(record)

    def _hand_over(self, records: list[Record]) -> None:
        with self._lock:
            self._waiting += len(records)
        self._queue.put(records)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop."""
        self._turn.flush()
        self._queue.put(None)
        self._thread.join(timeout)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- the writer thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while sum(len(b) for b in batch if b is not None) < 1000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            records = [r for b in batch if b is not None for r in b]
            if records:
                self._write(records)
                with self._lock:
                    self._waiting -= len(records)
            if None in batch:
                return

    def _line(self, r: Record) -> bytes:
        return orjson.dumps(
            {
                "schema": SCHEMA_VERSION,
                "ts": iso_utc(r.ts),
                "request_id": r.request_id,
                "instance": self.instance,
                "model": r.manifest.name,
                "version": r.manifest.version,
                "latency_ms": r.latency_ms,
                "inputs": named_inputs(r.manifest, r.rows),
                "outputs": r.outputs,
                "cached": r.cached,
            },
            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE,
        )

    def _write(self, records: list[Record]) -> None:
        try:
            data = b"".join(self._line(r) for r in records)
            fd = self._file(records[0].ts)
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
        except (OSError, ValueError, TypeError) as exc:
            self._count("failed", len(records))
            self._warn(f"prediction log write failed: {exc}")
            self._reset()
            return
        self._count("written", len(records))

    def _file(self, ts: float) -> int:
        day = iso_utc(ts)[:10]
        if self._fd is None or day != self._day:
            self._reset()
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{self.instance}-{day}.jsonl"
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._day = day
        return self._fd

    def _reset(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _count(self, result: str, n: int) -> None:
        if self.on_result is not None:
            self.on_result(result, n)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            log.error(message, extra={"directory": str(self.directory)})
