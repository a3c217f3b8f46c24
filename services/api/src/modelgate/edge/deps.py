"""Typed dependencies on the worker's state for routes (``RepositoryDep``, ``ServiceDep``),
built on ``worker_state.worker_state``; the request body reader and the JSON answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from modelgate.edge.worker_state import Lifecycle as Lifecycle
from modelgate.edge.worker_state import worker_state
from modelgate.errors import ModelGateError
from modelgate.inference.repository import ModelRepository
from modelgate.inference.service import PredictionService
from modelgate.settings import Settings
from modelgate.shared.control import FleetControl


# Async on purpose: FastAPI runs a plain ``def`` dependency in a thread pool, which costs
# a thread hop per dependency per request for what is an attribute read.
async def _settings(request: Request) -> Settings:
    return worker_state(request).settings


async def _repository(request: Request) -> ModelRepository:
    return worker_state(request).repository


async def _service(request: Request) -> PredictionService:
    return worker_state(request).service


async def _lifecycle(request: Request) -> Lifecycle:
    return worker_state(request).lifecycle


async def _control(request: Request) -> FleetControl:
    return worker_state(request).control


SettingsDep = Annotated[Settings, Depends(_settings)]
RepositoryDep = Annotated[ModelRepository, Depends(_repository)]
ServiceDep = Annotated[PredictionService, Depends(_service)]
LifecycleDep = Annotated[Lifecycle, Depends(_lifecycle)]
ControlDep = Annotated[FleetControl, Depends(_control)]


class PayloadTooLarge(ModelGateError):
    status_code = 413
    code = "payload_too_large"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes without reading them all.

    Straight from the ASGI messages: Starlette's ``Headers`` and ``stream()`` would cost
    a few microseconds of every prediction."""
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise PayloadTooLarge(f"request body exceeds {limit} bytes")
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class JSONAnswer(Response):
    """An orjson-encoded JSON answer: a Starlette ``Response`` in everything the app and
    its middleware use (``raw_headers``, ``headers``, ``background``, sending itself),
    built without ``init_headers``' generic pass that lower-cases, encodes and searches
    the headers again. Predictions are most of the traffic and their headers are known;
    ``raw`` takes them already encoded, and becomes the answer's header list (it is
    not copied). Neither ``headers`` nor ``raw`` may set content-length or
    content-type."""

    media_type = "application/json"

    def __init__(
        self,
        body: bytes,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        raw: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        out = raw if raw is not None else []
        if headers:
            out.extend(
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
            )
        if not (status_code < 200 or status_code in (204, 304)):
            out.append((b"content-length", b"%d" % len(body)))
        out.append((b"content-type", b"application/json"))
        self.raw_headers = out


def json_response(
    content: Any,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    raw: list[tuple[bytes, bytes]] | None = None,
) -> JSONAnswer:
    """orjson-encoded response; one serialisation pass, no pydantic round trip."""
    return JSONAnswer(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code, headers, raw
    )
