"""The prediction lane: prediction requests go straight to their endpoint.

A POST to a prediction route (native, V2 infer, V1 predict — every route whose endpoint
carries a quota) is matched here against those routes' own path patterns and handed to
the endpoint itself, with the app's own exception handlers for its errors. What it skips
is framework plumbing that these endpoints don't use: Starlette's exception and
FastAPI's exit-stack middleware, the walk over every route of the app, and FastAPI's
dependency solving and response checks. The endpoints, their validation, quotas, error
bodies and the OpenAPI schema are the same ones either way; anything else (other
methods, other paths) goes to the framework as before.

It sits behind the edge middleware (request id, metrics, access line) and sets
``scope["route"]`` as the router would, so access lines and metrics are labelled by route
template alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

_UNKNOWN = object()
_MATCHES_KEPT = 1024


@dataclass(frozen=True)
class _LaneRoute:
    pattern: re.Pattern[str]
    route: APIRoute
    endpoint: Callable[..., Any]


def lane_routes(routers: list[APIRouter]) -> list[_LaneRoute]:
    """The POST routes whose endpoint is quota-checked: the prediction routes. From the
    routers themselves, which the app includes without a prefix of its own."""
    return [
        _LaneRoute(route.path_regex, route, route.endpoint)
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
        and "POST" in (route.methods or ())
        and getattr(route.endpoint, "quota_scope", None) is not None
    ]


class PredictionLane:
    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, routers: list[APIRouter]) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._routes = lane_routes(routers)
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
            response = await lane_route.endpoint(request=request, **params)
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
