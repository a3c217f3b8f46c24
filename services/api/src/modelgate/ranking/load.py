"""``modelgate features load`` and ``get``: a feature file into the online store, and back.

The file is CSV or Parquet: columns ``<entity>_id,<feature>,…`` (e.g.
``user_id,historical_ctr,…``), one row per entity, every value a number (a categorical
feature: its value's index in the manifest's ``values``). Parquet is read with pyarrow,
the optional extra ``modelgate[parquet]``: a ~40 MB wheel that a replica never needs, so
it is not in the image (the shipped features are CSV).

Loading is idempotent and atomic: the version is the sha256 of what is loaded, a version
already in the store is not written again, a new one is written whole under its own key
and then made current in one command (keys.py).
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import secrets
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import orjson
import redis

from modelgate.inference.manifest import FEATURE_NAME
from modelgate.ranking import keys
from modelgate.ranking.keys import Entity

# Entities per HSET: large enough that the round trips don't dominate, small enough that
# one command never holds Redis for long (a 2000-field HSET takes ~1 ms).
CHUNK = 2000
# Versions kept per entity: the current one and the one before (a request may still be
# reading it, and it is the way back).
KEEP_VERSIONS = 2
# Features are stored as float32: a larger value would become inf.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# A staging table left by a loader that died is deleted by Redis after this long.
STAGING_TTL_S = 3600


class LoadError(Exception):
    """The file can't be loaded; the message says where and why."""


@dataclass(frozen=True)
class Table:
    entity: Entity
    columns: tuple[str, ...]
    ids: np.ndarray  # [n] int64
    values: np.ndarray  # [n, len(columns)] little-endian float32

    @cached_property
    def version(self) -> str:
        """Names the content: the same file gives the same version."""
        digest = hashlib.sha256()
        digest.update(f"{self.entity.value}\0{','.join(self.columns)}\0".encode())
        digest.update(self.ids.tobytes())
        digest.update(self.values.tobytes())
        return digest.hexdigest()[:16]


def read_table(path: Path, entity: Entity) -> Table:
    if path.suffix == ".parquet":
        return _read_parquet(path, entity)
    if path.suffix != ".csv":
        raise LoadError(f"{path}: expected a .csv or .parquet file")
    try:
        with path.open(newline="") as f:
            return _parse_csv(csv.reader(f), path, entity)
    except OSError as exc:
        raise LoadError(f"{path}: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise LoadError(f"{path}: not a readable CSV file ({exc})") from None


def _feature_columns(header: list[str], where: str, entity: Entity) -> tuple[str, ...]:
    """The feature names after the id column; the same rules for CSV and Parquet."""
    id_column = f"{entity.value}_id"
    if not header or header[0].strip() != id_column:
        raise LoadError(f"{where}: the first column must be {id_column}")
    columns = tuple(c.strip() for c in header[1:])
    if not columns:
        raise LoadError(f"{where}: no feature columns")
    bad = [c for c in columns if not re.fullmatch(FEATURE_NAME, c) or c == id_column]
    bad += sorted({c for c in columns if columns.count(c) > 1} - set(bad))
    if bad:
        hint = (
            " (a pandas index? write it with index=False)" if any("index" in c for c in bad) else ""
        )
        raise LoadError(
            f"{where}: feature names must be unique and match {FEATURE_NAME}, other than "
            f"{id_column}: {', '.join(map(repr, bad))}{hint}"
        )
    return columns


def _table(entity: Entity, columns: tuple[str, ...], ids: np.ndarray, values: np.ndarray) -> Table:
    return Table(
        entity,
        columns,
        np.asarray(ids, np.int64),
        np.asarray(values, np.float32).astype("<f4").reshape(len(ids), len(columns)),
    )


def _parse_csv(reader: Iterable[list[str]], path: Path, entity: Entity) -> Table:
    rows = iter(reader)
    header = next(rows, None)
    id_column = f"{entity.value}_id"
    columns = _feature_columns(header or [], f"{path}:1", entity)
    ids: list[int] = []
    values: list[list[float]] = []
    seen: dict[int, int] = {}
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(columns) + 1:
            raise LoadError(f"{path}:{line}: {len(row)} values, expected {len(columns) + 1}")
        try:
            entity_id = int(row[0])
        except ValueError:
            raise LoadError(f"{path}:{line}: {id_column} {row[0]!r} is not an integer") from None
        if not 0 <= entity_id < 2**63:
            raise LoadError(f"{path}:{line}: {id_column} {entity_id} is not a non-negative int64")
        if entity_id in seen:
            raise LoadError(
                f"{path}:{line}: {id_column} {entity_id} repeats line {seen[entity_id]}"
            )
        seen[entity_id] = line
        parsed = []
        for name, text in zip(columns, row[1:], strict=True):
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise LoadError(f"{path}:{line}: {name} {text!r} is not a finite number")
            if abs(value) > FLOAT32_MAX:
                raise LoadError(f"{path}:{line}: {name} {text!r} is beyond float32's range")
            parsed.append(value)
        ids.append(entity_id)
        values.append(parsed)
    if not ids:
        raise LoadError(f"{path}: no rows")
    return _table(entity, columns, np.array(ids, np.int64), np.array(values, np.float64))


def _read_parquet(path: Path, entity: Entity) -> Table:
    """A Parquet file, checked column by column; errors name the row (1 = the first)."""
    try:
        import pyarrow as pa  # type: ignore[import-untyped]  # no py.typed
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise LoadError(
            f"{path}: reading Parquet needs pyarrow: the extra modelgate[parquet] "
            "(or export the features as CSV)"
        ) from None
    try:
        data = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise LoadError(f"{path}: not a readable Parquet file ({exc})") from None
    columns = _feature_columns(list(data.column_names), str(path), entity)
    if data.num_rows == 0:
        raise LoadError(f"{path}: no rows")
    id_column = data.column_names[0]
    ids = _parquet_column(path, data, 0, integer=True)
    # Compared in the column's own type: an unsigned id may not fit int64, a signed one
    # may be negative.
    outside = ids >= 2**63 if ids.dtype.kind == "u" else ids < 0
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise LoadError(
            f"{path}: row {row + 1}: {id_column} {ids[row]} is not a non-negative int64"
        )
    ids = ids.astype(np.int64)
    order = np.argsort(ids, kind="stable")
    repeats = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if repeats.size:
        later = order[repeats + 1]
        k = int(np.argmin(later))
        first, again = int(order[repeats[k]]), int(later[k])
        raise LoadError(
            f"{path}: row {again + 1}: {id_column} {ids[again]} repeats row {first + 1}"
        )
    values = np.column_stack(
        [_parquet_column(path, data, i, integer=False) for i in range(1, data.num_columns)]
    )
    return _table(entity, columns, ids, values)


def _parquet_column(path: Path, data: Any, index: int, *, integer: bool) -> np.ndarray:
    """One column as numbers: ids in their integer type, features as float64; a null, a
    non-number, or a value that is not a finite float32 is refused, naming the row.
    (Dictionary-encoded and boolean columns are refused too: cast them to numbers.)"""
    import pyarrow as pa
    import pyarrow.compute as pc  # type: ignore[import-untyped]

    column, name = data.column(index), data.column_names[index]
    kind = column.type
    wanted = (
        pa.types.is_integer(kind)
        if integer
        else (pa.types.is_integer(kind) or pa.types.is_floating(kind))
    )
    if not wanted:
        what = "an integer" if integer else "a number"
        raise LoadError(f"{path}: {name} is a column of {kind}, not of {what}")
    if column.null_count:
        row = int(pc.index(pc.is_null(column), True).as_py())
        raise LoadError(f"{path}: row {row + 1}: {name} is empty (null)")
    if integer:
        return np.asarray(column.to_numpy())
    values: np.ndarray = np.asarray(column.to_numpy(), np.float64)
    bad = np.flatnonzero(~(np.abs(values) <= FLOAT32_MAX))  # NaN compares False
    if bad.size:
        row = int(bad[0])
        raise LoadError(
            f"{path}: row {row + 1}: {name} {values[row]} is not a finite float32 number"
        )
    return values


@dataclass(frozen=True)
class LoadReport:
    version: str
    previous: str | None
    count: int
    written: int  # 0: this version was in the store already
    seconds: float


class Progress:
    """A one-line progress bar on a terminal (stderr); nothing elsewhere."""

    def __init__(self, total: int, label: str, out: TextIO = sys.stderr) -> None:
        self.total, self.label, self.out = total, label, out
        self.live = out.isatty()
        self._shown = -1

    def update(self, done: int) -> None:
        percent = 100 * done // max(self.total, 1)
        if not self.live or percent == self._shown:
            return
        self._shown = percent
        bar = "#" * (percent // 4) + "." * (25 - percent // 4)
        self.out.write(f"\r{self.label} [{bar}] {done:,}/{self.total:,}")
        if done >= self.total:
            self.out.write("\n")
        self.out.flush()


def load(
    client: redis.Redis, feature_set: str, table: Table, progress: Progress | None = None
) -> LoadReport:
    """Write ``table`` as a new version of the feature set's entity table (unless it is
    there already) and make it current."""
    start = time.perf_counter()
    entity, version = table.entity, table.version
    pointer = keys.pointer(feature_set, entity)
    if text(client.get(pointer)) == version:
        if progress is not None:
            progress.update(progress.total)
        return LoadReport(version, version, len(table.ids), 0, time.perf_counter() - start)
    written = 0
    meta_key = keys.meta(feature_set, entity, version)
    if not client.exists(meta_key):  # the meta key is written last: its absence = incomplete
        # Written under a key of this loader's own, then renamed whole: loaders running at
        # once (every Kubernetes pod's init container) never write into each other's
        # table, and one that dies leaves only its staging key, which expires.
        staging = keys.staging(feature_set, entity, version, secrets.token_hex(8))
        for at in range(0, len(table.ids), CHUNK):
            ids = table.ids[at : at + CHUNK].tolist()
            rows = table.values[at : at + CHUNK]
            pipe = client.pipeline(transaction=False)
            pipe.hset(
                staging, mapping={str(i): r.tobytes() for i, r in zip(ids, rows, strict=True)}
            )
            pipe.expire(staging, STAGING_TTL_S)
            pipe.execute()
            written += len(ids)
            if progress is not None:
                progress.update(written)
        # RENAME keeps the staging key's expiry: PERSIST drops it, in the same transaction.
        table_key = keys.table(feature_set, entity, version)
        done = client.pipeline(transaction=True)
        done.rename(staging, table_key)
        done.persist(table_key)
        done.execute()
        meta = {
            "columns": list(table.columns),
            "count": len(table.ids),
            "loaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        client.set(meta_key, orjson.dumps(meta))
    elif progress is not None:
        progress.update(progress.total)
    # The switch: one command, so readers see the old version or the new, never a mix.
    previous = client.set(pointer, version, get=True)
    _prune(client, feature_set, entity, version, time.time())
    return LoadReport(version, text(previous), len(table.ids), written, time.perf_counter() - start)


def _prune(client: redis.Redis, feature_set: str, entity: Entity, version: str, now: float) -> None:
    """Keep the newest ``KEEP_VERSIONS`` versions; delete the tables of the others."""
    index = keys.versions(feature_set, entity)
    client.zadd(index, {version: now})
    for old in map(text, client.zrange(index, 0, -KEEP_VERSIONS - 1)):
        if old is None:
            continue
        if keys.VERSION.fullmatch(old):
            client.unlink(keys.table(feature_set, entity, old), keys.meta(feature_set, entity, old))
        client.zrem(index, old)


@dataclass(frozen=True)
class Stored:
    version: str
    columns: tuple[str, ...]
    rows: list[list[float] | None]  # per id asked for; None: not in the store


def get(client: redis.Redis, feature_set: str, entity: Entity, ids: list[int]) -> Stored | None:
    """The current version's features of ``ids``; None when nothing is loaded."""
    version = text(client.get(keys.pointer(feature_set, entity)))
    if version is None or not keys.VERSION.fullmatch(version):
        return None
    meta = client.get(keys.meta(feature_set, entity, version))
    if meta is None:
        return None
    columns = tuple(orjson.loads(meta)["columns"])
    values = client.hmget(keys.table(feature_set, entity, version), [str(i) for i in ids])
    rows: list[list[float] | None] = [
        np.frombuffer(v, "<f4").tolist() if isinstance(v, bytes) else None for v in values
    ]
    return Stored(version, columns, rows)


def text(value: object) -> str | None:
    """A reply as text (redis-py's types allow str, though this client returns bytes)."""
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None
