"""The prediction lane: prediction requests go straight to the prediction handler.

A POST to a prediction route (every route of every protocol's table, ``protocols/``) is
matched here against those routes' path patterns and handed to the handler
(``protocols/handler.py``), with the app's own exception handlers for errors the
handler does not answer itself. What it skips is framework plumbing that predictions
don't use: Starlette's exception and FastAPI's exit-stack middleware, the walk over
every route of the app, and FastAPI's dependency solving and response checks. FastAPI
registers the same table (``protocols/register.py``) for OpenAPI and the docs; anything
else (other methods, other paths) goes to the framework as before.

It sits behind the edge middleware (request id, metrics, access line) and sets
``scope["route"]`` as the router would, so access lines and metrics are labelled by route
template alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from modelgate.protocols.base import Route
from modelgate.protocols.register import Endpoint

_UNKNOWN = object()
_MATCHES_KEPT = 1024


@dataclass(frozen=True)
class _LaneRoute:
    pattern: re.Pattern[str]
    route: Route
    endpoint: Endpoint


class PredictionLane:
    def __init__(
        self, app: ASGIApp, fastapi_app: FastAPI, table: list[tuple[Route, Endpoint]]
    ) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._routes = [
            _LaneRoute(compile_path(route.path)[0], route, call) for route, call in table
        ]
        self._matched: dict[str, tuple[_LaneRoute, dict[str, str]] | None] = {}

    def _match(self, path: str) -> tuple[_LaneRoute, dict[str, str]] | None:
        # Clients call a few paths over and over: remember the answers, a bounded number
        # (paths are the client's choice), rather than trying every pattern each time.
        known = self._matched.get(path, _UNKNOWN)
        if known is not _UNKNOWN:
            return known  # type: ignore[return-value]
        found = None
        for lane_route in self._routes:
            m = lane_route.pattern.match(path)
            if m is not None:
                found = lane_route, m.groupdict()
                break
        if len(self._matched) >= _MATCHES_KEPT:
            self._matched.clear()
        self._matched[path] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        matched = self._match(scope["path"])
        if matched is None:
            await self.app(scope, receive, send)
            return
        lane_route, params = matched
        scope["route"] = lane_route.route
        scope["path_params"] = dict(params)  # every path parameter is a plain str
        request = Request(scope, receive)
        try:
            response = await lane_route.endpoint(request, params)
        except Exception as exc:
            handler = _handler_for(self.fastapi_app, exc)
            if handler is None:
                raise  # the edge (middleware.py) logs it and answers a generic 500
            response = await handler(request, exc)
        await response(scope, receive, send)


def _handler_for(app: FastAPI, exc: Exception) -> Callable[..., Any] | None:
    """The app's handler for an error it answers on purpose; not the catch-all for
    ``Exception``: the unexpected ones go up to the edge, which logs them."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            return handler
    return None
