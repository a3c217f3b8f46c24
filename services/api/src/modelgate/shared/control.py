"""Fleet-wide model control: one admin call, every worker of every replica follows.

An admin call lands on one worker. That worker verifies the version (on disk, sha256,
archive, loads and warms), then appends a command to the Redis stream
``modelgate:control``. Every worker of every replica follows the stream and applies each
command, in order, to its own repository: load, verify, warm, then one atomic swap, so a
request in flight finishes on the version it started with.

Why a stream and not plain pub/sub: a pub/sub message reaches only who listens at that
moment. A worker that gunicorn restarts, or one that lost Redis for a while, would come
back on whatever the disk says and quietly serve another version than the fleet. Reading
the stream from the start replays every command, so a late worker ends where the others
are. Commands are idempotent (a load of the version already loaded just makes it the
default), so replaying is cheap.

Each worker also reports what it runs into the hash ``modelgate:fleet`` (one field per
worker, refreshed every ``HEARTBEAT_S``), which ``GET /models/{name}`` shows, so an
operator can watch the fleet converge through the gateway.

Without Redis there is no fleet: a command applies to the worker that received it, and the
answer says so (``"propagated": false``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from modelgate.errors import InvalidInput, ModelLoadError, ModelNotFound, ModelRefused
from modelgate.inference.repository import (
    ModelRepository,
    check_name,
    check_version,
    valid_name,
    valid_version,
)
from modelgate.inference.runtime import load_model

log = logging.getLogger("modelgate.control")

STREAM = "modelgate:control"
FLEET = "modelgate:fleet"
STREAM_MAXLEN = 1000  # commands kept for replay; old ones are superseded anyway
BLOCK_MS = 1000  # how long one XREAD waits for news
HEARTBEAT_S = 2.0
STALE_S = 3 * HEARTBEAT_S  # a worker not heard from for this long is gone
APPLY_TIMEOUT_S = 120.0

Action = Literal["load", "unload"]


@dataclass(frozen=True)
class Command:
    action: Action
    model: str
    version: str | None  # None with unload: the whole model
    origin: str
    issued_at: str

    def encode(self) -> dict[str, str]:
        return {"command": orjson.dumps(asdict(self)).decode()}

    @classmethod
    def decode(cls, fields: dict[bytes, bytes]) -> Command:
        """One stream entry, parsed against the strict schema the fleet writes. The stream
        is untrusted input (anyone who can write to Redis can append to it): anything
        else raises ValueError, and the follower logs and skips it."""
        if set(fields) != {b"command"}:
            raise ValueError(f"unexpected fields {sorted(fields)[:5]!r}")
        raw = orjson.loads(fields[b"command"])  # ValueError on bad JSON or bad UTF-8
        if not isinstance(raw, dict) or set(raw) != _COMMAND_FIELDS:
            raise ValueError("not a command object")
        action, model, version = raw["action"], raw["model"], raw["version"]
        if action not in ("load", "unload"):
            raise ValueError(f"unknown action {str(action)[:40]!r}")
        if not valid_name(model):
            raise ValueError(f"bad model name {str(model)[:80]!r}")
        if not (valid_version(version) or (version is None and action == "unload")):
            raise ValueError(f"bad version {str(version)[:40]!r}")
        origin, issued_at = raw["origin"], raw["issued_at"]
        if not (isinstance(origin, str) and isinstance(issued_at, str)):
            raise ValueError("origin and issued_at must be strings")
        return cls(action, model, version, origin[:200], issued_at[:64])


_COMMAND_FIELDS = frozenset({"action", "model", "version", "origin", "issued_at"})


@dataclass(frozen=True)
class Outcome:
    applied: bool
    detail: str


@dataclass(frozen=True)
class Issued:
    """A command told to the fleet, and how it went on the worker that issued it."""

    command: Command
    entry_id: str  # the stream entry, or "local" without Redis
    outcome: Outcome
    sha256: str | None = None  # of the verified model file, for loads


def apply_command(repository: ModelRepository, command: Command) -> Outcome:
    """Apply one command to this worker's repository; a refusal leaves it as it was."""
    try:
        if command.action == "load":
            assert command.version is not None
            loaded = repository.make_default(command.model, command.version)
            return Outcome(True, f"serving {command.model} v{loaded.version}")
        repository.unload_version(command.model, command.version)
        return Outcome(True, f"unloaded {command.model} v{command.version or '*'}")
    except (ModelLoadError, ModelNotFound, InvalidInput) as exc:
        log.error(
            "fleet command refused by this worker",
            extra={"model": command.model, "version": command.version, "reason": str(exc)},
        )
        return Outcome(False, str(exc))


def verify_version(repository: ModelRepository, name: str, version: str) -> str:
    """What the receiving worker checks before telling the fleet: the version is on disk,
    its file matches the manifest's sha256 and it loads and warms. Returns the sha256.
    The name and version are checked by the repository (InvalidInput, 422) first."""
    check_name(name)
    check_version(version)
    if not (repository.root / name / version).is_dir():
        raise ModelNotFound(f"no version {version!r} of model {name!r} in the repository")
    try:
        manifest = repository.read_manifest(name, version)
        # a trial, then dropped
        load_model(repository.load_dir(name, version, manifest), manifest)
    except ModelLoadError as exc:
        repository.record_failure(name, version, str(exc))  # for /health's count and the index
        raise ModelRefused(f"version {version!r} of {name!r} refused: {exc}") from exc
    return manifest.sha256


class FleetControl:
    def __init__(
        self,
        repository: ModelRepository,
        redis_url: str,
        instance: str,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.repository = repository
        self.on_change = on_change  # after every command applied here (metrics)
        self.redis_url = redis_url
        self.instance = instance
        self.worker_id = f"{instance}/{os.getpid()}"
        self._redis: aioredis.Redis | None = None
        self._last_id = "0"  # replay everything the stream holds
        self._tasks: list[asyncio.Task[None]] = []
        self._outcomes: dict[str, Outcome] = {}
        self._applied = asyncio.Condition()
        self._redis_ok = False
        self.follower_restarts = 0
        self.skipped_commands = 0

    @property
    def propagates(self) -> bool:
        return self._redis is not None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Catch up with the fleet before serving, then follow it in the background."""
        if not self.redis_url:
            return
        # Raw bytes: an entry that isn't UTF-8 is refused by Command.decode, instead of
        # failing inside XREAD for every entry after it.
        self._redis = aioredis.from_url(
            self.redis_url,
            decode_responses=False,
            socket_connect_timeout=1.0,
            socket_timeout=BLOCK_MS / 1000 + 4,  # longer than a blocking XREAD
        )
        try:
            await self._read(block_ms=None)
        except (RedisError, OSError) as exc:
            log.warning("no fleet control yet (Redis unreachable)", extra={"reason": str(exc)})
        except Exception:  # never crash-loop a booting worker over the stream
            log.exception("fleet control catch-up failed; the follower retries")
        self._tasks = [
            asyncio.create_task(self._follow(), name="fleet-follow"),
            asyncio.create_task(self._heartbeat(), name="fleet-heartbeat"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.hdel(FLEET, self.worker_id)
            await self._redis.aclose()

    # --- following the stream -------------------------------------------------------------

    async def _read(self, block_ms: int | None) -> None:
        assert self._redis is not None
        while True:
            batches: Any = await self._redis.xread(  # RESP2: [[stream, entries]]
                {STREAM: self._last_id}, count=100, block=block_ms
            )
            if not batches:
                return
            for _stream, entries in batches:
                for raw_id, fields in entries:
                    await self._apply(raw_id.decode("ascii", "replace"), fields)
            block_ms = None  # drain what is there, then return to the caller's loop

    async def _follow(self) -> None:
        pause = 0.1
        while True:
            try:
                await self._read(block_ms=BLOCK_MS)
                if not self._redis_ok:
                    log.info("following fleet control", extra={"last_id": self._last_id})
                self._redis_ok, pause = True, 0.1
            except (RedisError, OSError) as exc:
                if self._redis_ok:
                    log.warning("lost fleet control", extra={"reason": str(exc)})
                self._redis_ok = False
                await asyncio.sleep(pause)  # back off before reconnecting
                pause = min(pause * 2, 5.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug or an input nobody foresaw: the follower restarts rather than
                # leaving this worker deaf to the fleet; /health shows the count.
                self.follower_restarts += 1
                log.exception("fleet follower failed; restarting it")
                self._redis_ok = False
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    def following(self) -> dict[str, Any]:
        """For /health: is this worker following the fleet, and how often it restarted."""
        task = self._tasks[0] if self._tasks else None
        return {
            "enabled": self._redis is not None,
            "following": self._redis_ok and task is not None and not task.done(),
            "follower_restarts": self.follower_restarts,
            "skipped_commands": self.skipped_commands,
        }

    async def _apply(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        try:
            command = Command.decode(fields)
        except (ValueError, TypeError, KeyError) as exc:
            self.skipped_commands += 1
            log.error(
                "unreadable fleet command skipped", extra={"id": entry_id, "reason": str(exc)}
            )
            outcome = Outcome(False, "unreadable command")
        else:
            outcome = await self._apply_here(command)
            log.info(
                "fleet command applied" if outcome.applied else "fleet command not applied",
                extra={"id": entry_id, **asdict(command), "detail": outcome.detail},
            )
        self._last_id = entry_id
        async with self._applied:
            self._outcomes[entry_id] = outcome
            while len(self._outcomes) > 100:
                self._outcomes.pop(next(iter(self._outcomes)))
            self._applied.notify_all()
        with contextlib.suppress(RedisError, OSError):
            await self._report()

    async def _apply_here(self, command: Command) -> Outcome:
        outcome = await asyncio.to_thread(apply_command, self.repository, command)
        if self.on_change is not None:
            self.on_change()
        return outcome

    # --- issuing commands -----------------------------------------------------------------

    def command(self, action: Action, model: str, version: str | None) -> Command:
        return Command(action, model, version, self.worker_id, datetime.now(UTC).isoformat())

    async def issue(self, command: Command) -> tuple[str, Outcome]:
        """Tell the fleet, and wait until this worker has applied it too."""
        if self._redis is None:
            return "local", await self._apply_here(command)
        fields: dict[Any, Any] = command.encode()
        raw_id = await self._redis.xadd(STREAM, fields, maxlen=STREAM_MAXLEN, approximate=True)
        entry_id = raw_id if isinstance(raw_id, str) else raw_id.decode()
        async with self._applied:
            await asyncio.wait_for(
                self._applied.wait_for(lambda: entry_id in self._outcomes), APPLY_TIMEOUT_S
            )
            return entry_id, self._outcomes[entry_id]

    async def load(self, name: str, version: str) -> Issued:
        """Verify ``version`` here, then make it the default fleet-wide. Verified before
        the fleet hears of it: a refused version is never published, so every replica
        stays on what it had. Every protocol's load goes through here."""
        sha256 = await asyncio.to_thread(verify_version, self.repository, name, version)
        command = self.command("load", name, version)
        entry_id, outcome = await self.issue(command)
        return Issued(command, entry_id, outcome, sha256)

    async def unload(self, name: str, version: str | None) -> Issued:
        """Stop serving one loaded version, or the whole model, fleet-wide."""
        check_name(name)
        if version is not None:
            check_version(version)
        entry = self.repository.entry(name)
        if version is not None and version not in entry.versions:
            raise ModelNotFound(f"model {name!r} has no loaded version {version!r}")
        command = self.command("unload", name, version)
        entry_id, outcome = await self.issue(command)
        return Issued(command, entry_id, outcome)

    # --- what the fleet runs --------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "pid": os.getpid(),
            "seen": time.time(),
            "models": {
                name: {"default_version": e.default_version, "versions": sorted(e.versions)}
                for name, e in self.repository.models.items()
            },
        }

    async def _report(self) -> None:
        assert self._redis is not None
        await self._redis.hset(FLEET, self.worker_id, orjson.dumps(self.state()).decode())

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(RedisError, OSError):
                await self._report()
            await asyncio.sleep(HEARTBEAT_S)

    async def fleet(self, model: str) -> list[dict[str, Any]]:
        """What every live worker runs of ``model``: from Redis, so any replica can tell."""
        if self._redis is None:
            workers = [self.state()]
        else:
            try:
                raw = await self._redis.hgetall(FLEET)
            except (RedisError, OSError):
                return []
            now = time.time()
            workers = []
            for value in raw.values():  # reports are untrusted too: skip what doesn't parse
                with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                    w = orjson.loads(value)
                    if now - float(w["seen"]) < STALE_S and isinstance(w["models"], dict):
                        workers.append(w)
        out = []
        for w in workers:
            with contextlib.suppress(AttributeError, KeyError, TypeError, ValueError):
                served = w["models"].get(model)
                out.append(
                    {
                        "instance": str(w["instance"]),
                        "pid": int(w["pid"]),
                        "default_version": served["default_version"] if served else None,
                        "versions": list(served["versions"]) if served else [],
                    }
                )
        out.sort(key=lambda w: (w["instance"], w["pid"]))
        return out
