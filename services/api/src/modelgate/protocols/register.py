"""The prediction routes, registered from the protocols' tables: once for the prediction
lane (``lane.py``, which serves them) and once for FastAPI (OpenAPI, the docs, and the
405 for another method), so that the two cannot drift apart."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from modelgate.protocols.base import Protocol, Route
from modelgate.protocols.handler import predict

# (request, path parameters) → the answer
Endpoint = Callable[[Request, dict[str, str]], Awaitable[Response]]


def endpoint(protocol: Protocol, route: Route) -> Endpoint:
    """The route's handler, as the lane calls it."""
    bound = functools.partial(predict, protocol, route)

    async def call(request: Request, params: dict[str, str]) -> Response:
        return await bound(request, params.get("name"), params.get("version"))

    return call


def lane_table(protocols: tuple[Protocol, ...]) -> list[tuple[Route, Endpoint]]:
    return [(route, endpoint(p, route)) for p in protocols for route in p.routes]


def add_to_fastapi(app: FastAPI, protocols: tuple[Protocol, ...]) -> None:
    """Each route as a FastAPI POST route, with its path parameters in the signature so
    that OpenAPI documents them; it calls the same handler as the lane."""
    for protocol in protocols:
        for route in protocol.routes:
            app.add_api_route(
                route.path,
                _framework_endpoint(protocol, route),
                methods=["POST"],
                name=route.name,
                tags=[protocol.tag],
                description=route.doc,
                openapi_extra=route.openapi_extra,
            )


def _framework_endpoint(protocol: Protocol, route: Route) -> Callable[..., Any]:
    call = endpoint(protocol, route)

    async def framework_endpoint(request: Request, **params: str) -> Response:
        return await call(request, params)

    names = [p for p in ("name", "version") if "{" + p + "}" in route.path]
    framework_endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            *(inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, annotation=str) for p in names),
            inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
        ],
        return_annotation=Response,
    )
    return framework_endpoint
