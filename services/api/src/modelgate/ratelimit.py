"""Per-client quotas, counted in Redis so that every worker of every replica shares them:
a limit of L per window is L across the fleet.

* Route classes: every single-prediction route shares the ``predict`` quota and every
  batch route the ``batch`` quota, so a client can't multiply its quota by calling the
  same model under several paths.
* Limits use the ``limits`` notation ("600/minute", "10/second;600/minute").
* Identity: the API key when one is presented (hashed: Redis never sees a key), else the
  client address — which is the real client's, since gunicorn trusts ``X-Forwarded-For``
  only from the gateway (``forwarded_allow_ips``).
* Fixed windows: a Lua script increments every limit of the route class and returns the
  counts and the windows' remaining time, so the check and the ``X-RateLimit-*`` headers
  cost one asynchronous round trip. The checks a worker's requests make in the same
  event-loop turn share that round trip (one script call for all of them): under load
  the per-request cost is a few microseconds. Exact across the fleet.
* Redis trouble: short socket timeouts, then an in-memory window per worker (a quota is
  looser until Redis is back) behind a circuit breaker, so a dead Redis costs nothing per
  request. Never a failed request.

Why not slowapi, which the design card named: its check uses the blocking Redis client on
the event loop, three round trips with the headers. Measured on one worker
(``bench/ratelimit_cost.sh``) it cut throughput to 0.42×; this check keeps slowapi's
semantics (limit notation, key function, fixed windows, fallback, JSON 429 with
``Retry-After`` and ``X-RateLimit-*``) without blocking.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse_many
from starlette.requests import Request
from starlette.responses import Response

from modelgate.auth import presented_key, require_client
from modelgate.coalesce import PerTurn
from modelgate.errors import RateLimited
from modelgate.rediscache import CircuitBreaker, fast_fail_client
from modelgate.redisconn import REDIS_ERRORS, PipelinedRedis
from modelgate.settings import RateLimitSettings

log = logging.getLogger("modelgate.ratelimit")

PREDICT_SCOPE = "predict"
BATCH_SCOPE = "batch"

# KEYS[i]: a window's counter; ARGV[2i - 1]: the cost, ARGV[2i]: the window in ms.
# Returns count_1, ttl_ms_1, count_2, ttl_ms_2, … A key may repeat (two requests of one
# client in the same call): each increment sees the one before, as separate calls would.
_HIT = """
local out = {}
for i, key in ipairs(KEYS) do
  local count = redis.call('INCRBY', key, ARGV[2 * i - 1])
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    ttl = tonumber(ARGV[2 * i])
    redis.call('PEXPIRE', key, ttl)
  end
  out[2 * i - 1] = count
  out[2 * i] = ttl
end
return out
"""


def client_identity(request: Request) -> str:
    """Whom a quota belongs to: the API key's digest, else the client address."""
    key = presented_key(request)
    if key is not None:
        return "key:" + _key_digest(key)
    client = request.scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


@functools.lru_cache(maxsize=4096)
def _key_digest(key: str) -> str:
    """A short digest of a key: what Redis sees instead of the key. Cached: a client's
    every request presents the same key."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one check, for the tightest limit of the route class."""

    allowed: bool
    limit: RateLimitItem
    remaining: int
    reset_in_s: float  # until the tightest window ends

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit.amount),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(time.time() + self.reset_in_s)),  # epoch s
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_in_s)))
        return headers

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """``headers()`` of an allowed request as ASGI header pairs, to append to an
        answer's own: on every prediction, so without Starlette's header mapping."""
        reset = math.ceil(time.time() + self.reset_in_s)
        return [
            (b"x-ratelimit-limit", b"%d" % self.limit.amount),
            (b"x-ratelimit-remaining", b"%d" % self.remaining),
            (b"x-ratelimit-reset", b"%d" % reset),
        ]


@dataclass(frozen=True, slots=True)
class _Limit:
    """One limit of a route class, with the parts of its check that never change."""

    item: RateLimitItem
    suffix: str  # ends its counter's key
    window_ms: int


class MemoryWindows:
    """Fixed windows in this worker's memory: the fallback while Redis is unreachable."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._windows: dict[str, tuple[int, float]] = {}  # key -> (count, ends at)

    def hit(self, keys: list[str], windows_ms: list[int], cost: int) -> list[tuple[int, int]]:
        now = self.clock()
        if len(self._windows) > 10_000:  # many clients: forget the expired windows
            self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
        out = []
        for key, window_ms in zip(keys, windows_ms, strict=True):
            count, ends = self._windows.get(key, (0, 0.0))
            if ends <= now:
                count, ends = 0, now + window_ms / 1000
            count += cost
            self._windows[key] = (count, ends)
            out.append((count, max(0, int((ends - now) * 1000))))
        return out


# One check: its keys, their windows in ms, the cost.
_Hit = tuple[list[str], list[int], int]


class Quotas:
    """The fleet-wide quota check: one Lua round trip to Redis per event-loop turn (for
    every check made in it), or memory while Redis is down."""

    def __init__(self, settings: RateLimitSettings, redis_url: str, breaker_s: float = 5.0) -> None:
        self.enabled = settings.enabled
        self.limits = {
            PREDICT_SCOPE: _limits(settings.predict),
            BATCH_SCOPE: _limits(settings.batch),
        }
        self.memory = MemoryWindows()
        self.breaker = CircuitBreaker(breaker_s)
        self.client: PipelinedRedis | None = None
        if redis_url:
            self.client = fast_fail_client(redis_url, settings.timeout_ms / 1000)
        elif self.enabled:
            log.warning("rate limits without Redis are per worker, not fleet-wide")
        # Every check of one event-loop turn goes to Redis in one script call.
        self._hits: PerTurn[_Hit, list[tuple[int, int]]] = PerTurn(self._send)

    async def check(self, identity: str, scope: str, cost: int = 1) -> Verdict:
        limits = self.limits[scope]
        keys = [f"quota:{scope}:{identity}:{limit.suffix}" for limit in limits]
        counts = await self._hit(keys, [limit.window_ms for limit in limits], cost)
        verdict: Verdict | None = None
        for limit, (count, ttl_ms) in zip(limits, counts, strict=True):
            amount = limit.item.amount
            candidate = Verdict(count <= amount, limit.item, max(0, amount - count), ttl_ms / 1000)
            # Report a refusing limit first, else the one closest to refusing.
            if verdict is None or (candidate.allowed, candidate.remaining) < (
                verdict.allowed,
                verdict.remaining,
            ):
                verdict = candidate
        assert verdict is not None  # parse_many never returns an empty list
        return verdict

    async def _hit(
        self, keys: list[str], windows_ms: list[int], cost: int
    ) -> list[tuple[int, int]]:
        if self.client is not None and self.breaker.allow():
            try:
                counts = await self._hits.submit((keys, windows_ms, cost))
            except REDIS_ERRORS as exc:
                if self.breaker.failed():
                    log.warning(
                        "redis unavailable; quotas counted per worker",
                        extra={"error": repr(exc), "pause_s": self.breaker.cooldown},
                    )
            else:
                self.breaker.succeeded()
                return counts
        return self.memory.hit(keys, windows_ms, cost)

    async def _send(self, hits: list[_Hit]) -> list[list[tuple[int, int]]]:
        keys = [key for hit_keys, _, _ in hits for key in hit_keys]
        args = [a for _, windows, cost in hits for window in windows for a in (cost, window)]
        assert self.client is not None  # only called when there is one (``_hit``)
        flat = await self.client.script(_HIT, keys, args)
        out, at = [], 0
        for hit_keys, _, _ in hits:
            n = len(hit_keys)
            out.append([(int(flat[at + 2 * i]), int(flat[at + 2 * i + 1])) for i in range(n)])
            at += 2 * n
        return out

    async def close(self) -> None:
        await self._hits.drain()
        if self.client is not None:
            await self.client.close()


def _limits(spec: str) -> list[_Limit]:
    return [
        _Limit(
            item,
            f"{item.amount}/{item.multiples}/{item.GRANULARITY.name}",
            item.get_expiry() * 1000,
        )
        for item in parse_many(spec)
    ]


Endpoint = Callable[..., Awaitable[Response]]


def quota(scope: str) -> Callable[[Endpoint], Endpoint]:
    """For a prediction route: the client key (when keys are configured), then the
    route class's quota, then the handler; ``X-RateLimit-*`` on every answer."""

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def checked(*args: Any, **kwargs: Any) -> Response:
            request: Request = kwargs["request"]
            await require_client(request)
            quotas: Quotas = request.scope["state"]["quotas"]
            if not quotas.enabled:
                return await endpoint(*args, **kwargs)
            verdict = await quotas.check(client_identity(request), scope)
            if not verdict.allowed:
                request.app.state.metrics.rate_limited.labels(scope).inc()
                raise RateLimited(
                    f"rate limit exceeded: {verdict.limit}; "
                    f"retry after {verdict.headers()['Retry-After']}s",
                    verdict.headers(),
                )
            response = await endpoint(*args, **kwargs)
            response.raw_headers.extend(verdict.raw_headers())
            return response

        # Marks a prediction route: the prediction lane (lane.py) serves these directly.
        checked.quota_scope = scope  # type: ignore[attr-defined]
        return checked

    return decorate
