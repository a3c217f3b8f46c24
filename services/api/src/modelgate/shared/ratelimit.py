"""Per-client quotas, counted in Redis so that every worker of every replica shares them:
a limit of L per window is L across the fleet.

* Route classes: every single-prediction route shares the ``predict`` quota and every
  batch route the ``batch`` quota, so a client can't multiply its quota by calling the
  same model under several paths.
* Limits use the ``limits`` notation ("600/minute", "10/second;600/minute").
* Identity: the API key when keys are configured (it was checked against them first;
  hashed: Redis never sees a key), else the client address — which is the real client's,
  since gunicorn trusts ``X-Forwarded-For`` only from the gateway
  (``forwarded_allow_ips``). An unchecked key is never an identity.
* V1 and V2 inference requests may carry many instances, so they are charged like the
  native batch routes: one unit of the ``batch`` quota per request.
* Fixed windows: a Lua script increments every limit of the route class and returns the
  counts and the windows' remaining time, so the check and the ``X-RateLimit-*`` headers
  cost one asynchronous round trip. The checks a worker's requests make in the same
  event-loop turn share that round trip (one script call for all of them).
* Leases: a client busy on a worker (LEASE_MIN checks in LEASE_PERIOD_S) gets a block of
  units counted in Redis at once and spent by that worker without a round trip; the
  stack at ~10k req/s from one client made 0.118 script calls per request before and
  0.012 with them. Never over the limit, since a unit is counted before it is spent;
  a lease is at most a sixteenth of the room left, so quotas of a few dozen and the end
  of any quota still go one unit at a time. What a client that stops leaves unspent
  (at most its last LEASE_PERIOD_S of checks on that worker) is lost until its window
  ends.
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
from collections.abc import Callable
from dataclasses import dataclass, field

from limits import RateLimitItem, parse_many
from starlette.requests import Request

from modelgate.edge.auth import presented_key
from modelgate.settings import RateLimitSettings
from modelgate.shared.breaker import CircuitBreaker, fast_fail_client
from modelgate.shared.coalesce import PerTurn
from modelgate.shared.redisconn import REDIS_ERRORS, PipelinedRedis

log = logging.getLogger("modelgate.ratelimit")

PREDICT_SCOPE = "predict"
BATCH_SCOPE = "batch"

# One call serves every check of an event-loop turn. ARGV holds, per check: the number of
# its keys n, its cost, the units it wants (cost plus a lease), then n pairs of the limit's
# amount and window in ms; KEYS holds each check's n counters in turn. Per check it
# returns the units granted (0: refused), then count, ttl_ms per key. A check is refused
# when its cost does not fit under every limit; the cost is counted all the same, as
# fixed windows count refused hits. A lease past the cost takes at most a sixteenth of
# the room left, so small quotas and the last of any quota go one unit at a time.
# Checks are applied in order: a key that repeats sees the increments before it.
_HIT = """
local out, k, a = {}, 1, 1
while a <= #ARGV do
  local n, cost, want = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local room = nil
  for i = 0, n - 1 do
    local left = tonumber(ARGV[a + 3 + 2 * i]) - tonumber(redis.call('GET', KEYS[k + i]) or '0')
    if room == nil or left < room then room = left end
  end
  local grant, take = 0, cost
  if room >= cost then
    grant = math.min(want, cost + math.floor((room - cost) / 16))
    take = grant
  end
  out[#out + 1] = grant
  for i = 0, n - 1 do
    local key = KEYS[k + i]
    local count = redis.call('INCRBY', key, take)
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      ttl = tonumber(ARGV[a + 4 + 2 * i])
      redis.call('PEXPIRE', key, ttl)
    end
    out[#out + 1] = count
    out[#out + 1] = ttl
  end
  k = k + n
  a = a + 3 + 2 * n
end
return out
"""

# Leases: a client busy on this worker gets a block of units from Redis and spends it
# here, one Redis call per block instead of one per event-loop turn. The block is what
# the client asked of this worker in the last LEASE_PERIOD_S, from LEASE_MIN units up to
# LEASE_MAX, and lasts until the first of its windows ends.
LEASE_PERIOD_S = 0.05
LEASE_MIN = 8
LEASE_MAX = 1024
SWEEP_MIN = 10_000  # windows/accounts kept before the idle ones are swept


def client_identity(request: Request, keys_configured: bool) -> str:
    """Whom a quota belongs to: the API key's digest when keys are configured (the key
    then passed ``require_client``: it is one of them), else the client address. A key
    nobody checked is no identity: with no keys configured, a client rotating
    ``X-API-Key`` values would otherwise get a fresh quota (and Redis key) per value."""
    if keys_configured:
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
        self._sweep_at = SWEEP_MIN

    def hit(self, keys: list[str], windows_ms: list[int], cost: int) -> list[tuple[int, int]]:
        now = self.clock()
        if len(self._windows) > self._sweep_at:  # many clients: forget the expired windows
            self._sweep(now)
        out = []
        for key, window_ms in zip(keys, windows_ms, strict=True):
            count, ends = self._windows.get(key, (0, 0.0))
            if ends <= now:
                count, ends = 0, now + window_ms / 1000
            count += cost
            self._windows[key] = (count, ends)
            out.append((count, max(0, int((ends - now) * 1000))))
        return out

    def _sweep(self, now: float) -> None:
        self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
        # The next sweep waits until the map has doubled, so with many live clients a
        # check costs O(1) amortised instead of a full scan each time.
        self._sweep_at = max(SWEEP_MIN, 2 * len(self._windows))


@dataclass(slots=True)
class _Account:
    """One client's use of one route class on this worker: its lease and its demand."""

    keys: list[str]  # its counters in Redis, one per limit
    units: int = 0  # leased and not yet spent
    counts: list[int] = field(default_factory=list)  # each counter after the lease's grant
    ends: list[float] = field(default_factory=list)  # each window's end (monotonic)
    leasing: bool = False  # a request for a lease is in flight
    since: float = 0.0  # start of the current demand period
    seen: int = 0  # checks in the current period
    demand: int = 0  # checks in the last full period

    def note(self, now: float) -> None:
        if now - self.since >= LEASE_PERIOD_S:
            recent = now - self.since < 2 * LEASE_PERIOD_S
            self.demand = self.seen if recent else 0
            self.since, self.seen = now, 0
        self.seen += 1

    def spend(self, cost: int, now: float) -> bool:
        if self.units < cost or not self.ends or now >= min(self.ends):
            return False
        self.units -= cost
        return True


# What Redis (or memory) answered to one check: the units leased to this worker beyond
# the check's own cost (0 without a lease), and each window's (count, ttl_ms). Whether
# the check itself fits is read from the counts (``_verdict``).
_Grant = tuple[int, list[tuple[int, int]]]
# One check as sent: keys, [(amount, window_ms)], cost, units wanted.
_Hit = tuple[list[str], list[tuple[int, int]], int, int]


class Quotas:
    """The fleet-wide quota check: a busy client's checks spend a lease held by this
    worker; the others cost one Lua call to Redis per event-loop turn (for every check
    made in it), or memory while Redis is down.

    Never more than the limit: a unit is counted in Redis before any worker spends it.
    The price of leases is that a busy client which stops may leave up to a lease
    unspent on a worker (at most its last LEASE_PERIOD_S of requests there, and a
    sixteenth of its room) until the window ends."""

    def __init__(
        self,
        settings: RateLimitSettings,
        redis_url: str,
        breaker_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = settings.enabled
        self.limits = {
            PREDICT_SCOPE: _limits(settings.predict),
            BATCH_SCOPE: _limits(settings.batch),
        }
        self.clock = clock
        self.memory = MemoryWindows(clock)
        self.breaker = CircuitBreaker(breaker_s, clock)
        self.client: PipelinedRedis | None = None
        if redis_url:
            self.client = fast_fail_client(redis_url, settings.timeout_ms / 1000)
        elif self.enabled:
            log.warning("rate limits without Redis are per worker, not fleet-wide")
        self._accounts: dict[tuple[str, str], _Account] = {}
        self._sweep_at = SWEEP_MIN
        # Every check of one event-loop turn goes to Redis in one script call.
        self._hits: PerTurn[_Hit, _Grant] = PerTurn(self._send)

    async def check(self, identity: str, scope: str, cost: int = 1) -> Verdict:
        limits = self.limits[scope]
        account = self._account(identity, scope, limits)
        now = self.clock()
        account.note(now)
        if account.spend(cost, now):
            return _verdict(limits, account.counts, account.units, account.ends, now)
        # A lease when the client is busy here and none is being asked for already.
        want = cost
        if not account.leasing and account.demand >= LEASE_MIN and self.client is not None:
            want += min(account.demand, LEASE_MAX)
            account.leasing = True
        try:
            left, counts = await self._hit(account.keys, limits, cost, want)
        finally:
            if want > cost:
                account.leasing = False
        ends = [now + ttl_ms / 1000 for _, ttl_ms in counts]
        totals = [count for count, _ in counts]
        if left:  # the rest of a lease: this worker spends it on the client's next checks
            account.units, account.counts, account.ends = left, totals, ends
        return _verdict(limits, totals, left, ends, now)

    def _account(self, identity: str, scope: str, limits: list[_Limit]) -> _Account:
        account = self._accounts.get((scope, identity))
        if account is None:
            if len(self._accounts) >= self._sweep_at:  # many clients: forget the idle ones
                self._forget_idle()
                self._sweep_at = max(SWEEP_MIN, 2 * len(self._accounts))  # O(1) amortised
            keys = [f"quota:{scope}:{identity}:{limit.suffix}" for limit in limits]
            account = self._accounts[(scope, identity)] = _Account(keys, since=self.clock())
        return account

    def _forget_idle(self) -> None:
        now = self.clock()
        self._accounts = {
            k: a
            for k, a in self._accounts.items()
            if a.leasing or now - a.since < 2 * LEASE_PERIOD_S or (a.units and now < min(a.ends))
        }

    async def _hit(self, keys: list[str], limits: list[_Limit], cost: int, want: int) -> _Grant:
        if self.client is not None and self.breaker.allow():
            try:
                amounts = [(limit.item.amount, limit.window_ms) for limit in limits]
                answer = await self._hits.submit((keys, amounts, cost, want))
            except REDIS_ERRORS as exc:
                if self.breaker.failed():
                    log.warning(
                        "redis unavailable; quotas counted per worker",
                        extra={"error": repr(exc), "pause_s": self.breaker.cooldown},
                    )
            else:
                self.breaker.succeeded()
                return answer
        return 0, self.memory.hit(keys, [limit.window_ms for limit in limits], cost)

    async def _send(self, hits: list[_Hit]) -> list[_Grant]:
        keys = [key for hit_keys, _, _, _ in hits for key in hit_keys]
        args: list[int] = []
        for hit_keys, amounts, cost, want in hits:
            args += (len(hit_keys), cost, want)
            args += [a for pair in amounts for a in pair]
        assert self.client is not None  # only called when there is one (``_hit``)
        flat = await self.client.script(_HIT, keys, args)
        out, at = [], 0
        for hit_keys, _, cost, _ in hits:
            n = len(hit_keys)
            counts = [(int(flat[at + 1 + 2 * i]), int(flat[at + 2 + 2 * i])) for i in range(n)]
            out.append((max(0, int(flat[at]) - cost), counts))  # granted 0 when refused
            at += 1 + 2 * n
        return out

    async def close(self) -> None:
        await self._hits.drain()
        if self.client is not None:
            await self.client.close()


def _verdict(
    limits: list[_Limit],
    counts: list[int],
    unspent: int,
    ends: list[float],
    now: float,
) -> Verdict:
    """The verdict for the tightest limit. ``counts`` are the counters after a grant of
    which ``unspent`` units are still leased here: the last unit spent is number
    ``count - unspent`` of its window, whichever worker spends the others."""
    verdict: Verdict | None = None
    for limit, count, end in zip(limits, counts, ends, strict=True):
        amount = limit.item.amount
        used = count - unspent
        candidate = Verdict(used <= amount, limit.item, max(0, amount - used), max(0.0, end - now))
        # Report a refusing limit first, else the one closest to refusing.
        if verdict is None or (candidate.allowed, candidate.remaining) < (
            verdict.allowed,
            verdict.remaining,
        ):
            verdict = candidate
    assert verdict is not None  # parse_many never returns an empty list
    return verdict


def _limits(spec: str) -> list[_Limit]:
    return [
        _Limit(
            item,
            f"{item.amount}/{item.multiples}/{item.GRANULARITY.name}",
            item.get_expiry() * 1000,
        )
        for item in parse_many(spec)
    ]
