"""Redis on the request path: a client that fails fast, and the circuit breaker that then
skips Redis for a while, so a dead Redis costs nothing per request. Used by the
prediction cache (``rediscache.py``) and the quotas (``ratelimit.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from modelgate.shared.redisconn import PipelinedRedis


@dataclass
class CircuitBreaker:
    """Closed until a failure; then open (skip Redis) for ``cooldown`` seconds; then one
    call is let through to probe, and a success closes it again."""

    cooldown: float
    clock: Callable[[], float] = time.monotonic
    _open_until: float = 0.0

    def allow(self) -> bool:
        return self.clock() >= self._open_until

    def failed(self) -> bool:
        """Open for ``cooldown``; True when this failure opened it (worth a log line),
        False when it was open already (a probe that failed again)."""
        was_open = self.is_open
        self._open_until = self.clock() + self.cooldown
        return not was_open

    def succeeded(self) -> None:
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return not self.allow()


def fast_fail_client(url: str, timeout_s: float) -> PipelinedRedis:
    """A Redis client for the request path: connects and answers within ``timeout_s`` or
    fails, without retrying, so a slow or dead Redis trips the caller's breaker quickly."""
    return PipelinedRedis(url, timeout_s)
