"""The feature files shipped with ranking models, loaded into the store at stack start.

A ranker's version directory may hold ``features/user.csv`` and ``features/item.csv``
(the demo ranker's do: ``make models``). For each ranking model of a repository, the
highest version's files are loaded into its feature set; loading is idempotent (load.py),
so starting a stack again writes nothing.

Shipped files never roll back an operator's load: each entity's ``shipped`` key
(keys.py) remembers the version this loader last made current, and when another version
is current (``modelgate features load`` ran since), the shipped file is left unloaded.
That matters where this runs often: on Kubernetes it is every api pod's init container.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import redis

from modelgate.inference.manifest import Task, read_manifest
from modelgate.inference.repository import discover
from modelgate.ranking import keys, load
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


@dataclass(frozen=True)
class Outcome:
    what: str  # "<feature set>/<entity>"
    rows: int
    version: str  # the shipped file's
    written: int
    kept: str | None = None  # another version, loaded since and current: left as it is

    def line(self) -> str:
        if self.kept is not None:
            return (
                f"{self.what}: version {self.kept}, loaded since, stays current; "
                f"shipped version {self.version} not loaded"
            )
        return f"{self.what}: {self.rows:,} rows, version {self.version}, {self.written:,} written"


def load_shipped(client: redis.Redis, repository: Path) -> list[Outcome]:
    """Load every shipped feature file unless an operator's load has replaced it; raises
    ``load.LoadError`` or ``redis.RedisError``."""
    outcomes = []
    for feature_set, entity, path in shipped(repository):
        table = load.read_table(path, entity)
        what = f"{feature_set}/{entity.value}"
        current = load.text(client.get(keys.pointer(feature_set, entity)))
        last = load.text(client.get(keys.shipped(feature_set, entity)))
        if current is not None and current not in (last, table.version):
            outcomes.append(Outcome(what, len(table.ids), table.version, 0, kept=current))
            continue
        report = load.load(client, feature_set, table)
        client.set(keys.shipped(feature_set, entity), table.version)
        outcomes.append(Outcome(what, report.count, report.version, report.written))
    return outcomes
