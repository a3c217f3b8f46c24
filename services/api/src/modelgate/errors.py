"""Domain errors and the one table that maps them to HTTP answers.

The native API's error body (the standard protocols answer ``{"error": "<message>"}``,
``message_only_response``; each protocol names its shape, ``protocols/``)::

    {"error": "invalid_input", "message": "features.age: must be <= 100 (got 140)",
     "field": "features.age", "reason": "must be <= 100 (got 140)",
     "errors": [{"field": ..., "reason": ...}, ...], "request_id": "..."}

Unexpected exceptions are logged with the request id and answered with a generic 500
(by the edge middleware, ``middleware.Edge``, which knows the id) that carries nothing
about the internals (LitServe's approach, not KServe's, which echoes
``type(exc): str(exc)`` to the client).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from modelgate.observability.logging import request_id_var


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str


class ModelGateError(Exception):
    """Base of every error the service answers on purpose."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []

    def headers(self) -> dict[str, str]:
        return {}


class InvalidInput(ModelGateError):
    status_code = 422
    code = "invalid_input"

    @classmethod
    def for_fields(cls, errors: list[FieldError]) -> InvalidInput:
        summary = "; ".join(f"{e.field}: {e.reason}" for e in errors[:5])
        if len(errors) > 5:
            summary += f"; and {len(errors) - 5} more"
        return cls(summary, errors)


class MalformedRequest(ModelGateError):
    status_code = 400
    code = "malformed_request"


class ModelNotFound(ModelGateError):
    status_code = 404
    code = "model_not_found"


class ModelRefused(ModelGateError):
    """An admin asked for a version that fails verification (sha256, archive, warm-up)."""

    status_code = 422
    code = "model_refused"


class ModelNotReady(ModelGateError):
    status_code = 503
    code = "model_not_ready"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class Overloaded(ModelGateError):
    status_code = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class RateLimited(ModelGateError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self._headers = headers  # Retry-After and X-RateLimit-*

    def headers(self) -> dict[str, str]:
        return self._headers


class Unauthorized(ModelGateError):
    status_code = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="modelgate"'}


class Forbidden(ModelGateError):
    status_code = 403
    code = "forbidden"


class ModelLoadError(Exception):
    """A model version could not be verified or loaded; never reaches a client as-is."""


def error_body(code: str, message: str, errors: list[FieldError] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if errors:
        body["field"] = errors[0].field
        body["reason"] = errors[0].reason
        body["errors"] = [{"field": e.field, "reason": e.reason} for e in errors]
    body["request_id"] = request_id_var.get()
    return body


class ErrorShape(Protocol):
    """How a wire format answers an error: (status, code, message, field errors, headers)
    → the response. ``error_response`` is the native API's; each protocol names its own."""

    def __call__(
        self,
        status: int,
        code: str,
        message: str,
        errors: list[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response: ...


def error_response(
    status: int,
    code: str,
    message: str,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        orjson.dumps(error_body(code, message, errors)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def message_only_response(
    status: int,
    code: str,
    message: str,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The standard protocols' shape (V1, V2): their clients expect ``{"error":
    "<message>"}`` and 400 for a bad request (tritonclient and TF Serving clients raise
    with that message); the native API keeps its richer body."""
    return Response(
        orjson.dumps({"error": message}),
        status_code=400 if status == 422 else status,
        media_type="application/json",
        headers=headers,
    )


# Which shape an error takes, by the request's path: a prediction route's errors are
# shaped by its protocol (``protocols/handler.py``); the framework-routed rest (metadata,
# health, a 404 or 405 under a protocol's paths) by the protocol that owns the path
# (``protocols.error_shape``), the native API's elsewhere.
ShapeFor = Callable[[str], ErrorShape]


def _native_everywhere(_: str) -> ErrorShape:
    return error_response


def _handlers(shape_for: ShapeFor) -> tuple[Any, Any]:
    async def modelgate_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ModelGateError)
        shape = shape_for(request.url.path)
        return shape(exc.status_code, exc.code, exc.message, exc.errors, exc.headers())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        shape = shape_for(request.url.path)
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        return shape(exc.status_code, code, str(exc.detail), None, exc.headers)

    return modelgate_error, http_error


async def _request_validation_error(_: Request, exc: Exception) -> Response:
    # Only path/query parameters reach FastAPI's validation; bodies are parsed by us.
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldError(".".join(str(p) for p in e.get("loc", ())), str(e.get("msg", "invalid")))
        for e in exc.errors()
    ]
    return error_response(422, InvalidInput.code, "invalid request parameters", errors)


def internal_error_body() -> bytes:
    """The answer to an unexpected exception: nothing about what went wrong. The
    request-id middleware sends it and logs the exception, since it knows the id."""
    return orjson.dumps(error_body("internal_error", "internal server error"))


async def _unexpected_error(_: Request, exc: Exception) -> Response:
    # FastAPI's server-error middleware answers with this, then re-raises for the edge
    # middleware (middleware.py) to log with the request id.
    return Response(internal_error_body(), status_code=500, media_type="application/json")


def install_error_handlers(app: FastAPI, shape_for: ShapeFor = _native_everywhere) -> None:
    modelgate_error, http_error = _handlers(shape_for)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_exception_handler(ModelGateError, modelgate_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
