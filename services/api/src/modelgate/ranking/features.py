"""Reading the online feature store: a request's user and items in one Redis round trip.

The fetch is one EVALSHA of ``FETCH_SCRIPT``: it follows the user and item pointers and
reads the user's and every item's packed features from the versions they name. A Lua
script runs atomically, so a request never sees a feature-set version switch half-way
(keys.py has the layout and the loader's side of that promise). The first time a worker
meets a version it reads that version's column names once more (``meta``), and keeps
them: a version's content never changes.

Redis trouble fails the request with 503 ``features_unavailable`` and trips a circuit
breaker, as the prediction cache does (rediscache.py): while it is open, requests fail
at once instead of each waiting for Redis. Features are the ranking's input, not a cache:
answering with cold-start defaults for everyone would look like a ranking and be none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from modelgate.errors import ModelGateError
from modelgate.ranking import keys
from modelgate.ranking.keys import Entity
from modelgate.shared.breaker import CircuitBreaker, fast_fail_client
from modelgate.shared.redisconn import REDIS_ERRORS, PipelinedRedis

log = logging.getLogger("modelgate.ranking")

FETCH_SCRIPT = """
-- KEYS: the user and the item pointer. ARGV: the user and the item table prefix, the
-- user id, then the item ids. Returns {user version, item version, the user's value,
-- {each item's value}}; a missing pointer, id or field is nil.
local uver = redis.call('GET', KEYS[1])
local iver = redis.call('GET', KEYS[2])
local user = false
local items = {}
if uver then user = redis.call('HGET', ARGV[1] .. uver, ARGV[3]) end
if iver and #ARGV > 3 then items = redis.call('HMGET', ARGV[2] .. iver, unpack(ARGV, 4)) end
return {uver, iver, user, items}
"""

# Versions whose columns a worker remembers; a feature set changes version a few times a
# day, so this bound is only there to make the memory finite.
MAX_REMEMBERED_VERSIONS = 64


class FeaturesUnavailable(ModelGateError):
    """The feature store can't answer: Redis is down or slow, or nothing is loaded."""

    status_code = 503
    code = "features_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


def _version(feature_set: str, entity: str, pointer: bytes | None) -> str:
    """The version a pointer names; a missing or foreign one means nothing is loaded."""
    version = pointer.decode(errors="replace") if pointer is not None else ""
    if not keys.VERSION.fullmatch(version):
        raise FeaturesUnavailable(f"feature set {feature_set!r} has no {entity} features loaded")
    return version


@dataclass(frozen=True)
class EntityRows:
    """One entity's fetched features, in the stored version's column order."""

    version: str
    columns: tuple[str, ...]
    values: np.ndarray  # [n, len(columns)] float32; rows of unknown ids are zeros
    known: np.ndarray  # [n] bool: the store had this id


@dataclass(frozen=True)
class Fetched:
    user: EntityRows  # one row
    items: EntityRows  # one row per requested item, in request order


@dataclass
class FeatureStore:
    client: PipelinedRedis
    breaker: CircuitBreaker
    # Called with (entity, "hit" | "default", ids) for metrics.
    on_lookup: Callable[[str, str, int], None] | None = None
    _columns: dict[tuple[str, Entity, str], tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str, timeout_s: float, breaker_s: float) -> FeatureStore:
        return cls(fast_fail_client(url, timeout_s), CircuitBreaker(breaker_s))

    async def fetch(self, feature_set: str, user_id: int, item_ids: Sequence[int]) -> Fetched:
        """The user's and the items' features; raises ``FeaturesUnavailable``."""
        if not self.breaker.allow():
            raise FeaturesUnavailable("the feature store is unavailable (Redis); retry shortly")
        user_ptr, item_ptr = (
            keys.pointer(feature_set, Entity.USER),
            keys.pointer(feature_set, Entity.ITEM),
        )
        args: list[Any] = [
            keys.table_prefix(feature_set, Entity.USER),
            keys.table_prefix(feature_set, Entity.ITEM),
            user_id,
            *item_ids,
        ]
        try:
            uver, iver, user, items = await self.client.script(
                FETCH_SCRIPT, [user_ptr, item_ptr], args
            )
            fetched = Fetched(
                await self._rows(
                    feature_set, Entity.USER, _version(feature_set, "user", uver), [user]
                ),
                await self._rows(
                    feature_set, Entity.ITEM, _version(feature_set, "item", iver), items
                ),
            )
        except REDIS_ERRORS as exc:
            if self.breaker.failed():
                log.warning(
                    "redis unavailable; ranking paused",
                    extra={"error": repr(exc), "pause_s": self.breaker.cooldown},
                )
            raise FeaturesUnavailable(
                "the feature store is unavailable (Redis); retry shortly"
            ) from None
        self.breaker.succeeded()
        return fetched

    async def _rows(
        self, feature_set: str, entity: Entity, version: str, values: list[bytes | None]
    ) -> EntityRows:
        columns = await self.columns(feature_set, entity, version)
        width = 4 * len(columns)
        # A value of another length is not this version's: treated as an unknown id.
        known = np.fromiter((v is not None and len(v) == width for v in values), bool)
        out = np.zeros((len(values), len(columns)), np.float32)
        if known.any():
            packed = b"".join(v for v, ok in zip(values, known, strict=True) if ok and v)
            out[known] = np.frombuffer(packed, "<f4").reshape(-1, len(columns))
        if self.on_lookup is not None:
            hits = int(known.sum())
            if hits:
                self.on_lookup(entity.value, "hit", hits)
            if hits < len(values):
                self.on_lookup(entity.value, "default", len(values) - hits)
        return EntityRows(version, columns, out, known)

    async def columns(self, feature_set: str, entity: Entity, version: str) -> tuple[str, ...]:
        """A version's column names: read once per worker (one GET), then remembered."""
        key = (feature_set, entity, version)
        found = self._columns.get(key)
        if found is not None:
            return found
        raw = await self.client.execute("GET", keys.meta(feature_set, entity, version))
        try:
            columns = tuple(str(c) for c in orjson.loads(raw)["columns"])
        except (TypeError, KeyError, orjson.JSONDecodeError):
            raise FeaturesUnavailable(
                f"feature set {feature_set!r}: {entity.value} version {version} has no "
                "readable column list; load it again"
            ) from None
        if len(self._columns) >= MAX_REMEMBERED_VERSIONS:
            self._columns.clear()
        self._columns[key] = columns
        return columns

    async def close(self) -> None:
        await self.client.close()
