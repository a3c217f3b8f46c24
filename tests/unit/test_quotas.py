"""The quota arithmetic: fixed windows, several limits per route class, the headers."""

from __future__ import annotations

import asyncio
import time

import pytest

from modelgate.settings import RateLimitSettings
from modelgate.shared.ratelimit import BATCH_SCOPE, PREDICT_SCOPE, MemoryWindows, Quotas


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_windows_reset_when_the_window_ends() -> None:
    clock = Clock()
    windows = MemoryWindows(clock)
    assert [windows.hit(["k"], [1000], 1)[0][0] for _ in range(3)] == [1, 2, 3]
    clock.now += 0.4
    assert windows.hit(["k"], [1000], 1) == [(4, 600)]
    clock.now += 0.6  # the window has ended: a fresh one starts at this hit
    assert windows.hit(["k"], [1000], 1) == [(1, 1000)]
    assert windows.hit(["other"], [1000], 2) == [(2, 1000)]


def test_the_tightest_of_several_limits_decides_and_is_reported() -> None:
    quotas = Quotas(
        RateLimitSettings(enabled=True, predict="2/second;5/minute", batch="1/minute"),
        redis_url="",
    )

    async def run() -> list[tuple[bool, int, int]]:
        out = []
        for _ in range(3):
            v = await quotas.check("ip:1", PREDICT_SCOPE)
            out.append((v.allowed, v.limit.amount, v.remaining))
        return out

    # 2/second is the closer to refusing at every step, then refuses the third call.
    assert asyncio.run(run()) == [(True, 2, 1), (True, 2, 0), (False, 2, 0)]


def test_headers_carry_retry_after_only_when_refused() -> None:
    quotas = Quotas(RateLimitSettings(enabled=True, batch="1/minute"), redis_url="")
    first = asyncio.run(quotas.check("key:abc", BATCH_SCOPE))
    second = asyncio.run(quotas.check("key:abc", BATCH_SCOPE))
    assert first.allowed and not second.allowed
    assert "Retry-After" not in first.headers()
    headers = second.headers()
    assert headers["X-RateLimit-Limit"] == "1" and headers["X-RateLimit-Remaining"] == "0"
    assert 59 <= int(headers["Retry-After"]) <= 60
    assert time.time() + 58 <= int(headers["X-RateLimit-Reset"]) <= time.time() + 61
    # Another client, and the other route class, count apart.
    assert asyncio.run(quotas.check("key:def", BATCH_SCOPE)).allowed
    assert asyncio.run(quotas.check("key:abc", PREDICT_SCOPE)).allowed


def test_raw_headers_of_an_allowed_answer_match_its_headers() -> None:
    quotas = Quotas(RateLimitSettings(enabled=True, predict="3/minute"), redis_url="")
    verdict = asyncio.run(quotas.check("ip:1", PREDICT_SCOPE))
    raw = {name.decode(): value.decode() for name, value in verdict.raw_headers()}
    named = {name.lower(): value for name, value in verdict.headers().items()}
    assert (
        raw
        == named
        == {
            "x-ratelimit-limit": "3",
            "x-ratelimit-remaining": "2",
            "x-ratelimit-reset": named["x-ratelimit-reset"],
        }
    )


def test_memory_fallback_stays_o1_with_many_live_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """With more live windows than the sweep threshold, a check must not rescan them all
    (it did: every hit past 10,000 clients rebuilt the whole map)."""
    clock = Clock()
    windows = MemoryWindows(clock)
    sweeps = []
    real = windows._sweep

    def counted(now: float) -> None:
        sweeps.append(now)
        real(now)

    monkeypatch.setattr(windows, "_sweep", counted)
    for i in range(40_000):
        windows.hit([f"quota:predict:ip:{i}:m"], [60_000], 1)
    assert len(sweeps) <= 3  # past 10k, then 20k, then 40k live windows
