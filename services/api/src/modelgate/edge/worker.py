"""The gunicorn worker class of a replica: uvicorn's, configured for serving behind the
gateway (``CONFIG_KWARGS`` is uvicorn-worker's documented way to set uvicorn options).

* ``http``: uvicorn's httptools protocol writing each answer in one piece (wire.py).
* No ``Server: uvicorn`` header: it tells a scanner what to try, and nginx drops the
  upstream's ``Server`` anyway (the gateway has ``server_tokens off``).
* With ``max_requests``, a worker past its limit leaves only when its siblings are all
  serving (recycling.py), so recycling never leaves a replica without a worker.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]  # no py.typed
from uvicorn import Config, Server
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]  # no py.typed

from modelgate.edge.recycling import Siblings
from modelgate.edge.wire import HttpProtocol


class RecyclingServer(Server):
    """uvicorn's server, whose request limit counts only when ``siblings`` agree."""

    def __init__(self, config: Config, siblings: Siblings | None) -> None:
        super().__init__(config)
        self.siblings = siblings
        self._limit = config.limit_max_requests
        self._leaving = False

    @property  # uvicorn's is a cached_property, computed once; ours asks each time
    def limit_max_requests(self) -> int | None:
        if self._limit is None or self.siblings is None:
            return self._limit
        if self.server_state.total_requests < self._limit:
            return None
        if not self._leaving:
            self._leaving = self.siblings.may_leave(os.getpid())
        return self._limit if self._leaving else None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.siblings is not None and self.started:
            self.siblings.ready(os.getpid())


class ReplicaWorker(UvicornWorker):  # type: ignore[misc]  # untyped base
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "http": HttpProtocol,
        "server_header": False,
    }

    async def _serve(self) -> None:
        """uvicorn-worker's ``_serve`` with our server class."""
        self.config.app = self.wsgi
        siblings = None
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # set by gunicorn.conf.py
        if self.cfg.max_requests > 0 and metrics_dir:
            siblings = Siblings.of_replica(metrics_dir, self.cfg.workers)
        server = RecyclingServer(self.config, siblings)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
