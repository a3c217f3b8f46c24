"""The prediction cache in Redis, shared by every worker of every replica.

Redis trouble is a cache miss, never a failed prediction: calls have short socket
timeouts, and after a failure a circuit breaker skips Redis entirely for
``breaker_seconds``, so a dead Redis costs nothing per request. Values are JSON (never
pickle). The lookups of every request of one event-loop turn go in one MGET, and the
writes of a turn in one pipeline of SET EX, sent after the answers (coalesce.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from modelgate.shared.breaker import CircuitBreaker, fast_fail_client
from modelgate.shared.coalesce import NextTurn, PerTurn
from modelgate.shared.redisconn import REDIS_ERRORS, PipelinedRedis

log = logging.getLogger("modelgate.cache")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    errors: int = 0
    skipped: int = 0  # lookups not tried because the breaker was open
    local_hits: int = 0  # of ``hits``: answered from this worker's memory (``local_entries``)


@dataclass
class RedisCache:
    client: PipelinedRedis
    ttl_seconds: int
    breaker: CircuitBreaker
    stats: CacheStats = field(default_factory=CacheStats)
    # Writes happen after the answer is sent; bound them so a slow Redis can't pile up tasks.
    max_pending_writes: int = 256
    # Called with ("hit" | "miss" | "error", rows) for metrics.
    on_lookup: Callable[[str, int], None] | None = None
    # The answers this worker used last, kept in its memory too (0: none).
    local_entries: int = 0
    _local: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict, init=False)
    _pending: set[asyncio.Task[None]] = field(default_factory=set)
    enabled: bool = field(default=True, init=False)
    _lookups: PerTurn[list[str], list[Any]] = field(init=False)
    _writes: NextTurn[dict[str, dict[str, Any]]] = field(init=False)

    def __post_init__(self) -> None:
        self._lookups = PerTurn(self._mget)
        self._writes = NextTurn(self._write_turn)

    async def _mget(self, requests: list[list[str]]) -> list[list[Any]]:
        values = await self.client.execute("MGET", *[key for keys in requests for key in keys])
        out, at = [], 0
        for keys in requests:
            out.append(values[at : at + len(keys)])
            at += len(keys)
        return out

    @classmethod
    def from_url(
        cls,
        url: str,
        ttl_seconds: int,
        timeout_s: float = 0.05,
        breaker_s: float = 5.0,
        local_entries: int = 0,
    ) -> RedisCache:
        return cls(
            fast_fail_client(url, timeout_s),
            ttl_seconds,
            CircuitBreaker(breaker_s),
            local_entries=local_entries,
        )

    def _failed(self, op: str, exc: Exception) -> None:
        self.stats.errors += 1
        if self.breaker.failed():
            log.warning(
                "redis unavailable; caching paused",
                extra={"op": op, "error": repr(exc), "pause_s": self.breaker.cooldown},
            )

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        """The answers cached for ``keys`` (None: not cached): from this worker's memory
        where it has them, the rest from Redis (and then remembered)."""
        if not self.local_entries:
            return await self._fetch(keys)
        out = [self._recall(key) for key in keys]
        rest = [i for i, value in enumerate(out) if value is None]
        if len(rest) < len(keys):
            found = len(keys) - len(rest)
            self.stats.hits += found
            self.stats.local_hits += found
            self._count("hit", found)
        if rest:
            fetched = await self._fetch([keys[i] for i in rest])
            for i, value in zip(rest, fetched, strict=True):
                if value is not None:
                    out[i] = value
                    self._remember(keys[i], value)
        return out

    def _recall(self, key: str) -> dict[str, Any] | None:
        value = self._local.get(key)
        if value is not None:
            self._local.move_to_end(key)
        return value

    def _remember(self, key: str, value: dict[str, Any]) -> None:
        """Keep the newest ``local_entries`` answers. Never stale: a key names the model
        file's sha256 and the input, and the answer is a function of both. Values are
        shared by every request that reads them, so they are never modified."""
        self._local[key] = value
        self._local.move_to_end(key)
        if len(self._local) > self.local_entries:
            self._local.popitem(last=False)

    async def _fetch(self, keys: list[str]) -> list[dict[str, Any] | None]:
        if not self.breaker.allow():
            self.stats.skipped += len(keys)
            self._count("error", len(keys))
            return [None] * len(keys)
        try:
            raw = await self._lookups.submit(keys)
        except REDIS_ERRORS as exc:
            self._failed("mget", exc)
            self._count("error", len(keys))
            return [None] * len(keys)
        self.breaker.succeeded()
        out: list[dict[str, Any] | None] = []
        for value in raw:
            try:
                out.append(orjson.loads(value) if value is not None else None)
            except orjson.JSONDecodeError:
                out.append(None)  # a foreign or damaged value is a miss, and is overwritten
        hits = sum(v is not None for v in out)
        self.stats.hits += hits
        self.stats.misses += len(out) - hits
        self._count("hit", hits)
        self._count("miss", len(out) - hits)
        return out

    def _count(self, result: str, rows: int) -> None:
        if self.on_lookup is not None and rows:
            self.on_lookup(result, rows)

    async def set_many(self, items: dict[str, dict[str, Any]]) -> None:
        if self.local_entries:
            for key, value in items.items():
                self._remember(key, value)
        if not items or not self.breaker.allow() or len(self._pending) >= self.max_pending_writes:
            return
        self._writes.add(items)

    def _write_turn(self, requests: list[dict[str, dict[str, Any]]]) -> None:
        items = {key: value for request in requests for key, value in request.items()}
        task = asyncio.get_running_loop().create_task(self._write(items))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, items: dict[str, dict[str, Any]]) -> None:
        ttl = self.ttl_seconds
        try:
            await self.client.pipeline(
                [("SET", key, orjson.dumps(value), "EX", ttl) for key, value in items.items()]
            )
        except REDIS_ERRORS as exc:
            self._failed("set", exc)

    async def flush_writes(self) -> None:
        """Wait for pending writes (tests, shutdown)."""
        self._writes.flush()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self) -> None:
        await self.flush_writes()
        await self.client.close()
