"""The gunicorn worker class of a replica: uvicorn's, configured for serving behind the
gateway (``CONFIG_KWARGS`` is uvicorn-worker's documented way to set uvicorn options).

* ``http``: uvicorn's httptools protocol writing each answer in one piece (wire.py).
* No ``Server: uvicorn`` header: it tells a scanner what to try, and nginx drops the
  upstream's ``Server`` anyway (the gateway has ``server_tokens off``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]  # no py.typed

from modelgate.wire import HttpProtocol


class ReplicaWorker(UvicornWorker):  # type: ignore[misc]  # untyped base
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "http": HttpProtocol,
        "server_header": False,
    }
