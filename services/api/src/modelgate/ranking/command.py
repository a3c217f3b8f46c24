"""``modelgate features load|get|load-shipped``: flags → load.py, and the lines they print.

``load-shipped`` loads the feature files shipped with a repository's rankers, as
``modelgate stack up`` does (seed.py): compose's one-shot ``features`` service runs it.

Redis is the one named by ``--redis-url``, else ``MODELGATE_REDIS_URL`` (with
``MODELGATE_REDIS_PASSWORD_FILE``), else the native stack's (``make up``), with its
password file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from modelgate.ranking.keys import Entity

if TYPE_CHECKING:
    import redis


def arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    ld = sub.add_parser(
        "load", help="a CSV or Parquet file → a new version of an entity's features"
    )
    gt = sub.add_parser("get", help="the current features of some ids, as JSON lines")
    sh = sub.add_parser(
        "load-shipped", help="every ranker's shipped feature files (as `stack up` loads them)"
    )
    sh.add_argument(
        "--model-repository", type=Path, default=None, help="default: MODELGATE_MODEL_REPOSITORY"
    )
    for p in (ld, gt):
        p.add_argument("--feature-set", required=True, help="as the manifest's ranking names it")
        p.add_argument("--entity", required=True, choices=[e.value for e in Entity])
    for p in (ld, gt, sh):
        p.add_argument(
            "--redis-url",
            default=None,
            help="default: MODELGATE_REDIS_URL, else the native stack's",
        )
        p.add_argument("--redis-password-file", type=Path, default=None)
    ld.add_argument(
        "--file", required=True, type=Path, help="FILE.csv or FILE.parquet: <entity>_id,features…"
    )
    gt.add_argument("ids", nargs="+", type=int, metavar="ID")


def redis_url(args: argparse.Namespace) -> str:
    from modelgate.settings import Settings

    settings = Settings()
    url = args.redis_url or settings.redis_url
    password_file = args.redis_password_file or settings.redis_password_file
    if not url:
        from modelgate.stack import launch as stack  # the native stack's password file
        from modelgate.stack.config import StackConfig

        config = StackConfig.from_env()
        url = config.redis_url
        stack_password = config.dir / stack.REDIS_PASSWORD_FILE
        if password_file is None and stack_password.is_file():
            password_file = stack_password
    return Settings(redis_url=url, redis_password_file=password_file).redis_connection_url


def main(args: argparse.Namespace) -> int:
    import redis  # here, not at import: `modelgate --help` and `serve` don't need it

    try:
        client = redis.Redis.from_url(redis_url(args), socket_timeout=30)
    except ValueError as exc:
        sys.stderr.write(f"modelgate features: {exc}\n")
        return 2
    try:
        with client:
            if args.action == "load-shipped":
                return _load_shipped(client, args.model_repository)
            entity = Entity(args.entity)
            if args.action == "load":
                return _load(client, args.feature_set, entity, args.file)
            return _get(client, args.feature_set, entity, args.ids)
    except redis.RedisError as exc:
        sys.stderr.write(f"modelgate features: Redis: {exc}\n")
        return 1
    except ValueError as exc:  # a feature-set name keys.py refuses
        sys.stderr.write(f"modelgate features: {exc}\n")
        return 2


def _load(client: redis.Redis, feature_set: str, entity: Entity, path: Path) -> int:
    from modelgate.ranking import load

    try:
        table = load.read_table(path, entity)
    except load.LoadError as exc:
        sys.stderr.write(f"modelgate features load: {exc}\n")
        return 2
    progress = load.Progress(len(table.ids), f"{feature_set}/{entity.value}")
    report = load.load(client, feature_set, table, progress)
    if report.written == 0 and report.previous == report.version:
        state = "already current, nothing written"
    elif report.written == 0:
        state = f"already stored, made current (was {report.previous})"
    else:
        state = f"{report.written:,} written, made current (was {report.previous or 'none'})"
    sys.stdout.write(
        f"{feature_set}/{entity.value}: {report.count:,} {entity.value}s, version "
        f"{report.version}: {state}, in {report.seconds:.2f} s\n"
    )
    return 0


def _load_shipped(client: redis.Redis, repository: Path | None) -> int:
    from modelgate.ranking import load, seed
    from modelgate.settings import Settings

    root = repository or Settings().model_repository
    if not root.is_dir():
        sys.stderr.write(f"modelgate features load-shipped: no model repository at {root}\n")
        return 2
    try:
        outcomes = seed.load_shipped(client, root)
    except load.LoadError as exc:
        sys.stderr.write(f"modelgate features load-shipped: {exc}\n")
        return 2
    for outcome in outcomes:
        sys.stdout.write(outcome.line() + "\n")
    if not outcomes:
        sys.stdout.write(f"no ranker in {root} ships feature files: nothing loaded\n")
    return 0


def _get(client: redis.Redis, feature_set: str, entity: Entity, ids: list[int]) -> int:
    import orjson

    from modelgate.ranking import load

    stored = load.get(client, feature_set, entity, ids)
    if stored is None:
        sys.stderr.write(f"modelgate features get: no {entity.value} features in {feature_set}\n")
        return 1
    for entity_id, row in zip(ids, stored.rows, strict=True):
        line = {
            f"{entity.value}_id": entity_id,
            "version": stored.version,
            "features": dict(zip(stored.columns, row, strict=True)) if row else None,
        }
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
    return 0
