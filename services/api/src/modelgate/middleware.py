"""Pure ASGI middleware (not ``BaseHTTPMiddleware``, which breaks context variables and
costs throughput): a request id for every request, one access-log line per request, and
the catch-all that turns an unexpected exception into a logged, generic 500."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelgate.errors import internal_error_body
from modelgate.logging import request_id_var

access_log = logging.getLogger("modelgate.access")
errors_log = logging.getLogger("modelgate.errors")

# A client's id is echoed and logged, so only a short, harmless charset is accepted.
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


class RequestContextMiddleware:
    """Adopt the caller's ``X-Request-ID`` (nginx's ``$request_id`` through the gateway)
    or make one; echo it on the response; write the access line in ``finally`` so that
    errors are logged too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                if _VALID_REQUEST_ID.match(value):
                    request_id = value.decode()
                break
        if not request_id:
            request_id = uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        header = (b"x-request-id", request_id.encode())

        status_sent = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status = message["status"]
                status_sent = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            errors_log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
            if status_sent:
                raise  # headers are out; the server can only drop the connection
            status = 500
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json"), header],
                }
            )
            await send({"type": "http.response.body", "body": internal_error_body()})
        finally:
            state: dict[str, Any] = scope.get("state", {})
            extra: dict[str, Any] = {
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                # The route template (bounded, groupable), once the router matched one.
                "route": getattr(scope.get("route"), "path", None),
                "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            for key in ("model", "version", "cache", "batch_rows"):
                if key in state:
                    extra[key] = state[key]
            access_log.info("request", extra=extra)
            request_id_var.reset(token)
