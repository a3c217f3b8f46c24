"""The online feature store's layout in Redis: every key is built here.

For feature set ``S`` and entity ``E`` (``user`` or ``item``)::

    mgfeat:{S}:E:current      → the current version, e.g. "3f9c0a1b2c3d4e5f" (a string)
    mgfeat:{S}:E:v:VERSION    → a hash: field = the entity id in decimal,
                                value = its features as packed little-endian float32
    mgfeat:{S}:E:v:VERSION:meta → JSON: {"columns": [...], "count": n, "loaded_at": ...}
    mgfeat:{S}:E:versions     → a sorted set of the versions kept (score: load time)
    mgfeat:{S}:E:shipped      → the version ``load-shipped`` last made current (seed.py)
    mgfeat:{S}:E:v:VERSION:staging:TOKEN → a hash being written by one loader, renamed
                                to the version's key when whole (expires if abandoned)

A version is the sha256 (16 hex digits) of what was loaded — columns, ids and values —
so loading the same file twice writes nothing, and a new version never shares a key
with the old one. Readers follow ``current``; the loader writes a whole new version,
then moves ``current`` in one command, so a request sees either the old version or the
new one, never a mix. The previous version stays (a request may be reading it); older
ones are deleted.

``{S}`` is a Redis Cluster hash tag: every key of a feature set lands in one slot, which
the fetch script (features.py) needs, as it reads the tables its pointers name.
Values are numbers only — nothing stored here is ever unpickled.
"""

from __future__ import annotations

import re
from enum import StrEnum

PREFIX = "mgfeat"
# The same spelling as the manifest's ``ranking.feature_set``: also safe inside a key.
FEATURE_SET = re.compile(r"[a-z][a-z0-9_-]{0,39}")
VERSION = re.compile(r"[0-9a-f]{16}")


class Entity(StrEnum):
    USER = "user"
    ITEM = "item"


def _base(feature_set: str, entity: Entity) -> str:
    if not FEATURE_SET.fullmatch(feature_set):
        raise ValueError(f"feature set {feature_set!r} must match {FEATURE_SET.pattern}")
    return f"{PREFIX}:{{{feature_set}}}:{entity.value}"


def pointer(feature_set: str, entity: Entity) -> str:
    return f"{_base(feature_set, entity)}:current"


def table_prefix(feature_set: str, entity: Entity) -> str:
    """A version's table is this prefix + the version (the fetch script appends it)."""
    return f"{_base(feature_set, entity)}:v:"


def table(feature_set: str, entity: Entity, version: str) -> str:
    if not VERSION.fullmatch(version):
        raise ValueError(f"feature-set version {version!r} must match {VERSION.pattern}")
    return table_prefix(feature_set, entity) + version


def meta(feature_set: str, entity: Entity, version: str) -> str:
    return table(feature_set, entity, version) + ":meta"


def versions(feature_set: str, entity: Entity) -> str:
    return f"{_base(feature_set, entity)}:versions"


def shipped(feature_set: str, entity: Entity) -> str:
    return f"{_base(feature_set, entity)}:shipped"


def staging(feature_set: str, entity: Entity, version: str, token: str) -> str:
    if not VERSION.fullmatch(token):  # the same shape as a version: 16 hex digits
        raise ValueError(f"staging token {token!r} must match {VERSION.pattern}")
    return f"{table(feature_set, entity, version)}:staging:{token}"
