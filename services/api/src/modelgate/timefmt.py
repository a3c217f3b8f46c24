"""UTC timestamps as ISO 8601 with milliseconds (``2026-11-22T06:14:39.123Z``), cheaply.

Every answer and every access line carries one; ``datetime.now().isoformat()`` costs a
few microseconds each time, so the part up to the second is formatted once per second.
"""

from __future__ import annotations

import time

_second = -1
_second_text = ""


def iso_utc(now: float | None = None) -> str:
    """``now`` (epoch seconds, default the current time) as ISO 8601 UTC, milliseconds."""
    global _second, _second_text
    if now is None:
        now = time.time()
    second = int(now)
    if second != _second:
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = second
    return f"{_second_text}.{int((now - second) * 1000):03d}Z"
