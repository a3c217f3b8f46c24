"""Tuning of a worker process for serving, applied once by its lifespan (``app.py``):
the garbage collector and the SIGTERM hook that starts draining. (torch's threads:
``runtime.configure_torch``.)"""

from __future__ import annotations

import contextlib
import gc
import signal
from types import FrameType

from modelgate.edge.worker_state import Lifecycle

# Allocations between young-generation collections (CPython's default: 700); see settle_heap.
YOUNG_GC_THRESHOLD = 5000


def drain_on_sigterm(lifecycle: Lifecycle) -> None:
    """Make /ready answer 503 from the moment SIGTERM arrives, then let the server's own
    handler (uvicorn's graceful shutdown) run as before."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        lifecycle.draining = True
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    # Outside the main thread (some test clients) there is nothing to hook.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, handler)


def settle_heap() -> None:
    """Once the models are loaded: keep the collector off what startup made, and run
    young collections less often."""
    # torch, FastAPI and the models leave about a million long-lived objects; a full
    # garbage collection walks them all (hundreds of ms, a p99 spike). Frozen, the
    # collector leaves them alone and only scans what requests allocate.
    gc.collect()
    gc.freeze()
    # What requests allocate is short-lived but, 64 requests in flight, always about
    # 2,000 objects live: at the default threshold (700 allocations) every young
    # collection walks them and promotes them, ~370 times a second and ~3% of a busy
    # worker. At 5,000 collections are 7x rarer and each takes about 0.5-1 ms (20,000
    # made them 4-6 ms, a p99 cost); S1 A/B +6-8% req/s (CHANGELOG).
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
