"""Following MLflow registry aliases: when ``churn@champion`` moves, the fleet follows.

Each worker polls the aliases it is told to follow (``MODELGATE_MLFLOW__FOLLOW``). When
an alias names a version other than the one this worker serves, the worker pulls that
version into the repository (verified; ``registry.pull``) and asks for it through the
fleet-wide reload (``FleetControl.load``), exactly as an admin would. The first worker to
notice publishes; the others receive the command on the control stream, find themselves
already on the alias's version at their next poll, and do nothing. A version the registry
offers but modelgate refuses (sha256, archive rules, warm-up) is logged, shown in
``/health`` as a load failure, remembered so it is not fetched again every poll, and never
replaces what is serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from modelgate.errors import ModelGateError
from modelgate.inference.registry import MlflowRegistry, ModelRef, RegistryError, pull
from modelgate.inference.repository import ModelRepository
from modelgate.shared.control import FleetControl

log = logging.getLogger("modelgate.follow")


def initial_sync(
    registry: MlflowRegistry, refs: list[ModelRef], repository: ModelRepository
) -> dict[str, str]:
    """Before the first load: pull what each alias names now. Returns name → version
    for the aliases that resolved and verified, to be made the default once loaded."""
    wanted: dict[str, str] = {}
    for ref in refs:
        try:
            version = registry.resolve(ref)
            pull(registry, ModelRef(ref.name, version=version), repository.root)
        except RegistryError as exc:
            log.error("registry alias not pulled", extra={"ref": str(ref), "reason": str(exc)})
            repository.record_failure(ref.name, f"@{ref.alias}", str(exc))
            continue
        wanted[ref.name] = version
    return wanted


class AliasFollower:
    def __init__(
        self,
        registry: MlflowRegistry,
        refs: list[ModelRef],
        repository: ModelRepository,
        control: FleetControl,
        poll_seconds: float,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.registry = registry
        self.refs = refs
        self.repository = repository
        self.control = control
        self.poll_seconds = poll_seconds
        self._jitter = jitter
        self._refused: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="alias-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            # Jittered, so the workers of a fleet don't all ask the registry at once.
            await asyncio.sleep(self.poll_seconds * (0.75 + 0.5 * self._jitter()))
            for ref in self.refs:
                try:
                    await self.check(ref)
                except Exception:  # a bug here must not end the following for good
                    log.exception("alias check failed", extra={"ref": str(ref)})

    def _serving(self, name: str) -> str | None:
        entry = self.repository.models.get(name)
        return entry.default_version if entry is not None else None

    async def check(self, ref: ModelRef) -> None:
        """One poll of one alias: pull and reload if it moved."""
        try:
            version = await asyncio.to_thread(self.registry.resolve, ref)
        except RegistryError as exc:
            log.warning("registry unreachable", extra={"ref": str(ref), "reason": str(exc)})
            return
        if version == self._serving(ref.name) or (ref.name, version) in self._refused:
            return
        try:
            await asyncio.to_thread(
                pull, self.registry, ModelRef(ref.name, version=version), self.repository.root
            )
            await self.control.load(ref.name, version)
        except (RegistryError, ModelGateError) as exc:
            self._refused.add((ref.name, version))
            self.repository.record_failure(ref.name, version, str(exc))
            return
        log.info("followed registry alias", extra={"ref": str(ref), "version": version})
