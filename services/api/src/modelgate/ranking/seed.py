"""The feature files shipped with ranking models, loaded into the store at stack start.

A ranker's version directory may hold ``features/user.csv`` and ``features/item.csv``
(the demo ranker's do: ``make models``). For each ranking model of a repository, the
highest version's files are loaded into its feature set; loading is idempotent (load.py),
so starting a stack again writes nothing. Features loaded by ``modelgate features load``
later take over as usual (the newest load is current).
"""

from __future__ import annotations

import logging
from pathlib import Path

import redis

from modelgate.inference.manifest import Task, read_manifest
from modelgate.inference.repository import discover
from modelgate.ranking import load
from modelgate.ranking.keys import Entity

log = logging.getLogger("modelgate.ranking")

FEATURES_DIR = "features"


def shipped(repository: Path) -> list[tuple[str, Entity, Path]]:
    """(feature set, entity, file) for every ranker's shipped feature file."""
    out = []
    for name, versions in discover(repository).items():
        version_dir = repository / name / versions[-1]
        try:
            manifest = read_manifest(version_dir)
        except (OSError, ValueError):
            continue  # the replicas report a bad manifest; features are no reason to stop
        if manifest.task is not Task.RANKING or manifest.ranking is None:
            continue
        for entity in Entity:
            path = version_dir / FEATURES_DIR / f"{entity.value}.csv"
            if path.is_file():
                out.append((manifest.ranking.feature_set, entity, path))
    return out


def load_shipped(client: redis.Redis, repository: Path) -> list[tuple[str, load.LoadReport]]:
    """Load every shipped feature file; raises ``load.LoadError`` or ``redis.RedisError``."""
    reports = []
    for feature_set, entity, path in shipped(repository):
        report = load.load(client, feature_set, load.read_table(path, entity))
        reports.append((f"{feature_set}/{entity.value}", report))
    return reports
