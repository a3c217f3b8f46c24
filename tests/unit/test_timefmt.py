"""iso_utc: the timestamp every answer and log line carries, from its caches or not."""

from __future__ import annotations

from datetime import UTC, datetime

from modelgate.observability.timefmt import iso_utc


def reference(now: float) -> str:
    text = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def test_matches_datetime_across_milliseconds_seconds_and_days() -> None:
    start = 1_795_391_999.9985  # 2026-11-22T23:59:59.998Z, a day boundary ahead
    times = [start + i * 0.0004 for i in range(20)]  # several per millisecond
    times += [1_700_000_000.0, 1_700_000_000.999, start, 0.5]  # back in time: no stale cache
    for now in times:
        assert iso_utc(now) == reference(now), now


def test_the_default_is_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    stamp = datetime.fromisoformat(iso_utc().replace("Z", "+00:00"))
    assert before <= stamp <= datetime.now(UTC)
