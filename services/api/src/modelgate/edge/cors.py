"""CORS for browsers, answered by the replicas (``MODELGATE_CORS__*``; off by default).

Why here rather than in nginx: one set of settings serves every deployment (a bare
``modelgate serve``, the native stack, compose, Kubernetes), origins are validated by the
same typed settings as everything else, and the gateway stays a pass-through for OPTIONS.
The cost: a preflight travels to a replica (it is cheap, and browsers cache it for
``max_age``), and answers nginx makes itself (its per-IP 429/503) carry no CORS headers.

A pure ASGI layer between the edge and the app (``app.create_app``), installed only when
``allow_origins`` is set: with CORS off, requests pay nothing. Not Starlette's
``CORSMiddleware``, which answers a disallowed preflight with a plain-text 400 rather
than modelgate's JSON error body and has no notion of exposing our headers by default.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelgate.errors import error_body
from modelgate.settings import CorsSettings

# What a browser script may read from an answer: the request id to quote in a bug
# report, the quota headers to slow down before a 429, and which model answered.
EXPOSED = (
    "X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, "
    "Retry-After, X-Model-Name, X-Model-Version, X-Cache, X-Batch-Size"
)


class Cors:
    def __init__(self, app: ASGIApp, settings: CorsSettings) -> None:
        self.app = app
        self.any_origin = "*" in settings.allow_origins
        self.origins = frozenset(o.encode() for o in settings.allow_origins)
        self.methods = frozenset(m.upper() for m in settings.allow_methods)
        self.headers = frozenset(h.lower() for h in settings.allow_headers)
        self.credentials = settings.allow_credentials
        common = [(b"vary", b"Origin")]
        if self.credentials:
            common.append((b"access-control-allow-credentials", b"true"))
        self.common = common
        self.preflight_headers = [
            (b"access-control-allow-methods", ", ".join(sorted(self.methods)).encode()),
            (b"access-control-allow-headers", ", ".join(sorted(self.headers)).encode()),
            (b"access-control-max-age", str(settings.max_age).encode()),
        ]
        self.exposed = (b"access-control-expose-headers", EXPOSED.encode())

    def allow_origin(self, origin: bytes) -> bytes | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or None."""
        if origin in self.origins:
            return origin
        if self.any_origin:
            # "*" is refused by browsers on credentialed requests; the settings forbid
            # that combination, so "*" is always the right answer here.
            return b"*"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = request_method = request_headers = None
        for key, value in scope["headers"]:
            if key == b"origin":
                origin = value
            elif key == b"access-control-request-method":
                request_method = value
            elif key == b"access-control-request-headers":
                request_headers = value
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = self.allow_origin(origin)
        if scope["method"] == "OPTIONS" and request_method is not None:
            await self.preflight(send, allowed, request_method, request_headers)
            return
        if allowed is None:  # the browser withholds the answer; nothing to add
            await self.app(scope, receive, send)
            return
        extra = [(b"access-control-allow-origin", allowed), *self.common, self.exposed]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def preflight(
        self, send: Send, allowed: bytes | None, method: bytes, headers: bytes | None
    ) -> None:
        asked = [h.strip().lower() for h in (headers or b"").decode("latin-1").split(",")]
        refused = [h for h in asked if h and h not in self.headers]
        if allowed is None:
            reason = "origin not allowed"
        elif method.decode("latin-1").upper() not in self.methods:
            reason = f"method {method.decode('latin-1')!r} not allowed"
        elif refused:
            reason = f"header(s) not allowed: {', '.join(refused)}"
        else:
            reason = ""
        if reason:
            body = orjson.dumps(error_body("cors_refused", f"CORS preflight refused: {reason}"))
            await _answer(send, 403, [(b"content-type", b"application/json")], body)
            return
        assert allowed is not None
        head = [(b"access-control-allow-origin", allowed), *self.common, *self.preflight_headers]
        await _answer(send, 204, head, b"")


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
