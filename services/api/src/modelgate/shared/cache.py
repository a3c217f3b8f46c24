"""The prediction cache seam.

``PredictionService`` talks to a ``PredictionCache``; a bare replica uses ``NullCache``.
Keys follow the architecture's contract:
``pred:{model}:{version}:{sha256 of model file, 12 hex}:{manifest digest, 12 hex}:{sha256
of the canonical row}`` — the canonical row is the validated float32 vector, so key order,
whitespace and ``1`` vs ``1.0`` produce the same key, and neither a new model file nor a
manifest-only edit (class names, say) ever hits an old answer.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

import numpy as np


def cache_key(
    name: str, version: str, model_sha256: str, manifest_digest: str, row: np.ndarray
) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(row, dtype=np.float32).tobytes()).hexdigest()
    return f"pred:{name}:{version}:{model_sha256[:12]}:{manifest_digest[:12]}:{digest}"


class PredictionCache(Protocol):
    # False for NullCache: then nothing is looked up, written, or hashed into a key.
    enabled: bool

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]: ...

    async def set_many(self, items: dict[str, dict[str, Any]]) -> None: ...

    async def close(self) -> None: ...


class NullCache:
    """Always a miss; used when no cache is configured."""

    enabled = False

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        return [None] * len(keys)

    async def set_many(self, items: dict[str, dict[str, Any]]) -> None:
        return None

    async def close(self) -> None:
        return None
