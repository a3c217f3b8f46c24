"""UTC timestamps as ISO 8601 with milliseconds (``2026-11-22T06:14:39.123Z``), cheaply.

Every answer, access line and prediction-log line carries one; ``datetime.now()
.isoformat()`` costs a few microseconds each time. Here the part up to the second is
formatted once per second, and a whole timestamp is reused within its millisecond (under
load, several answers share one). Each cache is one tuple, replaced whole, so the event
loop and the prediction log's writer thread can both call this without locks.
"""

from __future__ import annotations

import time

_second: tuple[int, str] = (-1, "")  # (epoch second, "YYYY-MM-DDTHH:MM:SS")
_milli: tuple[int, str] = (-1, "")  # (epoch millisecond, the whole timestamp)


def iso_utc(now: float | None = None) -> str:
    """``now`` (epoch seconds, default the current time) as ISO 8601 UTC, milliseconds."""
    global _second, _milli
    if now is None:
        now = time.time()
    milli = int(now * 1000)
    cached = _milli
    if cached[0] == milli:
        return cached[1]
    second, ms = divmod(milli, 1000)
    prefix = _second
    if prefix[0] != second:
        prefix = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    text = f"{prefix[1]}.{ms:03d}Z"
    _milli = (milli, text)
    return text
