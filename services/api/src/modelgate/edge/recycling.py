"""Worker recycling (gunicorn ``max_requests``) that never empties a replica.

uvicorn ends a worker as soon as it has served its ``max_requests``, and gunicorn starts
the replacement only then. A replacement takes seconds to boot (torch, the models, their
warm-up) — under load on two cores, tens of seconds — and a replica whose workers all
reached their limit within that time has none: the kernel still accepts connections on
its socket, so the gateway's requests wait there until they time out (the fault suite's
F6 measured ~4000 failures in 60 s this way).

So a worker past its limit leaves only when every sibling is serving: one file per ready
worker in ``<replica's metrics dir>/ready/``, written when the worker's startup is
complete, removed by the worker as it leaves and by the master when a worker exits
(``child_exit``, which also covers crashes). The check runs under an exclusive lock, so
two workers never leave together. A worker that must wait keeps serving. With one worker
per replica there is no sibling and recycling empties the replica while it boots: use
two or more with ``max_requests``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class Siblings:
    def __init__(self, directory: Path, workers: int) -> None:
        self.directory = directory
        self.workers = workers

    @classmethod
    def of_replica(cls, metrics_dir: str, workers: int) -> Siblings:
        directory = Path(metrics_dir) / "ready"
        directory.mkdir(exist_ok=True)
        return cls(directory, workers)

    def ready(self, pid: int) -> None:
        (self.directory / str(pid)).touch()

    def gone(self, pid: int) -> None:
        (self.directory / str(pid)).unlink(missing_ok=True)

    def may_leave(self, pid: int) -> bool:
        """True, once, when every worker of the replica is serving; this worker is then
        no longer counted as ready."""
        lock = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a sibling is deciding right now
            serving = sum(1 for p in self.directory.iterdir() if p.name.isdigit())
            if serving < self.workers:
                return False
            self.gone(pid)
            return True
        finally:
            with contextlib.suppress(OSError):
                os.close(lock)  # releases the lock
