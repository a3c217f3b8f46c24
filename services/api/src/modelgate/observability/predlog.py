"""The prediction log: every answered request as one JSON line, for monitoring (drift,
traffic mix) and for retraining.

Files are ``<dir>/<instance>-<YYYY-MM-DD>.jsonl`` (UTC days): one per replica per day,
written by all of the replica's workers. Each worker appends whole batches of lines with
one ``write`` on an ``O_APPEND`` descriptor, so lines from different workers never
interleave.

Operable on a disk of fixed size (see ``Rotation``):

* by time: a new file each UTC day (or each ``rotate_s`` slot, named by its start);
* by size: the file being written that has reached ``max_file_bytes`` is renamed to
  ``<name>.<HHMMSSffffff>.jsonl`` by the first worker that sees it, and a fresh one is
  started. Workers compare inodes before each write, so the others follow at their next
  batch; a batch in flight lands in the renamed file, complete (rename keeps the inode);
* in total: past ``max_total_bytes`` the replica's oldest files are deleted first, never
  the one being written.

The request path only appends a record to a list; the records of 50 ms (or 500 records)
are handed to a background thread together, which formats and writes them: one queue
item and one thread wake-up for all of them. (Per event-loop turn, as it was, meant
hundreds of wake-ups a second under load, each a GIL hand-off: ~5 % of a replica.)
More than ``max_queue`` records, or more than ``max_queue_bytes`` of them (a 1000-row
record holds about 260 KB once formatted), waiting drops the record, and a full disk or an
unwritable directory drops the batch; both are counted and logged (at most once a
minute), and never fail a prediction or slow it down.

One line (schema version 1):

    {"schema": 1, "ts": "2026-11-22T03:12:45.123Z", "request_id": "…", "instance": "api-1",
     "model": "churn", "version": "2", "latency_ms": 1.9,
     "inputs": [{"age": 35, "income": 75000.0, …}], "outputs": [{"prediction": 1, …}],
     "cached": [false]}

``inputs``, ``outputs`` and ``cached`` hold one element per row of the request, in order;
``latency_ms`` is the time from the cache lookup to the model's answer.

A rank request (``protocols/ranking.py``) writes one line of its own instead, its fields
after ``latency_ms`` (the request's whole time) being::

    "user_id": 7, "item_ids": [3, 42, …], "scores": [0.12, 0.31, …], "ranks": [2, 1, …],
    "context": {"device": "mobile", …}, "defaults_used": {"user": false, "items": [42]},
    "feature_versions": {"user": "…", "item": "…"}

``item_ids``, ``scores`` and ``ranks`` in request order; a rank is 0 for an item beyond
``top_k``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from modelgate.inference.manifest import Manifest
from modelgate.observability.timefmt import iso_utc
from modelgate.protocols.answers import native_answers
from modelgate.shared.coalesce import NextTurn

log = logging.getLogger("modelgate.predlog")

SCHEMA_VERSION = 1
HAND_OVER_AFTER_S = 0.05
HAND_OVER_RECORDS = 500
_ERROR_LOG_INTERVAL_S = 60.0
# What a record costs in memory per row beyond its input values: the outputs' dict and its
# values (measured with tracemalloc on churn: ~230 bytes), and per record the rest.
_BYTES_PER_OUTPUT_ROW = 256
_BYTES_PER_RECORD = 512
# How often the total size is checked besides at each new file (a listdir and a stat per
# file: nothing on the request path, and seldom enough to cost nothing on the writer).
_CAP_CHECK_INTERVAL_S = 30.0
DAY_S = 86_400


@dataclass(frozen=True)
class Rotation:
    """When a new file starts and how much the files may hold together."""

    rotate_s: int = DAY_S  # a new file every slot of this many seconds (UTC)
    max_file_bytes: int = 256 * 1024 * 1024
    max_total_bytes: int = 4 * 1024 * 1024 * 1024
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def slot_name(self, ts: float) -> str:
        """The file's time part: its slot's start, a plain day for daily files."""
        start = ts - ts % self.rotate_s
        if self.rotate_s % DAY_S == 0:
            return time.strftime("%Y-%m-%d", time.gmtime(start))
        return time.strftime("%Y-%m-%dT%H%M%S", time.gmtime(start))


def record_bytes(rows: np.ndarray, n_outputs: int) -> int:
    """What a waiting record holds in memory, near enough to bound the queue by."""
    return int(rows.nbytes) + n_outputs * _BYTES_PER_OUTPUT_ROW + _BYTES_PER_RECORD


@dataclass(slots=True)
class Record:
    ts: float  # epoch seconds
    request_id: str
    manifest: Manifest
    rows: np.ndarray
    # The model's output rows (PredictionService's), written as the native API's answer
    # fields by the writer thread; or those fields already.
    outputs: np.ndarray | list[dict[str, Any]]
    cached: list[bool]
    latency_ms: float
    # A rank request's own fields (written in place of inputs, outputs and cached).
    ranking: dict[str, Any] | None = None
    trace_id: str | None = None  # a sampled request's, when tracing is on (tracing.py)


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
        max_queue_bytes: int = 64 * 1024 * 1024,
        rotation: Rotation | None = None,
    ) -> None:
        self.directory = directory
        self.instance = instance
        self.on_result = on_result  # ("written" | "dropped" | "failed", records)
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.rotation = rotation or Rotation()
        # This replica's files, and only its own: "api-1" must not match "api-10-…".
        self._ours = re.compile(re.escape(instance) + r"-\d{4}-\d\d-\d\d[^/]*\.jsonl")
        self._bytes = 0  # bytes of records appended, not yet written; under _lock
        self._path: Path | None = None
        self._next_cap_check = 0.0
        self._turn: NextTurn[Record] = NextTurn(
            self._hand_over, after_s=HAND_OVER_AFTER_S, max_items=HAND_OVER_RECORDS
        )
        self._waiting = 0  # handed over, not yet written; under _lock (two threads)
        self._lock = threading.Lock()
        self._queue: queue.Queue[list[Record] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._fd: int | None = None
        self._last_error_log = 0.0
        self._thread.start()

    def append(self, record: Record) -> None:
        """Never blocks: past ``max_queue`` waiting records or ``max_queue_bytes`` of
        them, the record is dropped."""
        size = record_bytes(record.rows, len(record.outputs))
        with self._lock:
            full = (
                self._waiting + len(self._turn) >= self.max_queue
                or self._bytes + size > self.max_queue_bytes
            )
            if not full:
                self._bytes += size
        if full:
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
                size = sum(record_bytes(r.rows, len(r.outputs)) for r in records)
                with self._lock:
                    self._waiting -= len(records)
                    self._bytes -= size
            if None in batch:
                return

    def _line(self, r: Record) -> bytes:
        envelope = {
            "schema": SCHEMA_VERSION,
            "ts": iso_utc(r.ts),
            "request_id": r.request_id,
            "instance": self.instance,
            "model": r.manifest.name,
            "version": r.manifest.version,
            "latency_ms": r.latency_ms,
        }
        if r.trace_id is not None:
            envelope["trace_id"] = r.trace_id
        if r.ranking is not None:  # a rank request's own fields (protocols/ranking.py)
            return orjson.dumps({**envelope, **r.ranking}, option=orjson.OPT_APPEND_NEWLINE)
        return orjson.dumps(
            {
                **envelope,
                "inputs": named_inputs(r.manifest, r.rows),
                "outputs": (
                    r.outputs
                    if isinstance(r.outputs, list)
                    else native_answers(r.manifest, r.outputs)
                ),
                "cached": r.cached,
            },
            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE,
        )

    def _write(self, records: list[Record]) -> None:
        try:
            data = b"".join(self._line(r) for r in records)
            now = self.rotation.clock()
            fd = self._file(now)
            written = os.write(fd, data)
            if written != len(data):
                # A full disk takes part of the batch: cut it off again, or a torn line
                # would run into the next one written. (With the disk full, no other
                # worker has appended after it.)
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, os.fstat(fd).st_size - written)
                raise OSError(f"short write ({written} of {len(data)} bytes)")
            if now >= self._next_cap_check and self._path is not None:
                self._next_cap_check = now + _CAP_CHECK_INTERVAL_S
                self._enforce_cap(self._path)
        except (OSError, ValueError, TypeError) as exc:
            self._count("failed", len(records))
            self._warn(f"prediction log write failed: {exc}")
            self._reset()
            return
        self._count("written", len(records))

    def _file(self, now: float) -> int:
        """The descriptor to append to: today's (this slot's) file, a fresh one once it
        has reached its size, and the one the other workers write to if one of them
        rotated it."""
        slot = self.rotation.slot_name(now)
        path = self.directory / f"{self.instance}-{slot}.jsonl"
        if self._fd is not None and path == self._path:
            mine = os.fstat(self._fd)
            try:
                there = os.stat(path)
            except FileNotFoundError:
                there = None  # another worker rotated it and nothing is there yet
            if there is None or there.st_ino != mine.st_ino:
                self._reset()
            elif mine.st_size >= self.rotation.max_file_bytes:
                self._rotate(path, now)
                self._reset()
        if self._fd is None or path != self._path:
            self._reset()
            self.directory.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._path = path
            self._next_cap_check = 0.0  # a new file: check the total after this write
        return self._fd

    def _rotate(self, path: Path, now: float) -> None:
        stamp = time.strftime("%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}"
        # Two workers may see the full file at once: the second finds it gone, or finds
        # the first one's fresh file, which it leaves alone (another inode than ours).
        with contextlib.suppress(FileNotFoundError):
            if self._fd is not None and os.stat(path).st_ino == os.fstat(self._fd).st_ino:
                path.rename(path.with_name(f"{path.stem}.{stamp}.jsonl"))

    def _enforce_cap(self, current: Path) -> None:
        """Delete this replica's oldest files until they hold at most max_total_bytes
        together. The file being written counts, but is never deleted."""
        files = []
        for entry in os.scandir(self.directory):
            if self._ours.fullmatch(entry.name):
                with contextlib.suppress(FileNotFoundError):  # another worker's deletion
                    st = entry.stat()
                    files.append((st.st_mtime, entry.name, st.st_size))
        total = sum(size for _, _, size in files)
        for _, name, size in sorted(files):
            if total <= self.rotation.max_total_bytes:
                break
            if name == current.name:
                continue
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()
            total -= size
            log.info(
                "prediction log over its total size: deleted the oldest file",
                extra={"file": name, "bytes": size},
            )

    def _reset(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            self._path = None

    def _count(self, result: str, n: int) -> None:
        if self.on_result is not None:
            self.on_result(result, n)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            log.error(message, extra={"directory": str(self.directory)})
