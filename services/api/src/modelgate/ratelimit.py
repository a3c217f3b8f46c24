"""Per-client quotas with slowapi, counted in Redis so that every worker of every replica
shares them: a limit of L per window is L across the fleet.

* Route classes: every single-prediction route shares the ``predict`` quota and every
  batch route the ``batch`` quota (slowapi's ``shared_limit`` with a fixed scope), so a
  client can't multiply its quota by calling the same model under several paths.
* Identity: the API key when one is presented (hashed: Redis never sees a key), else the
  client address — which is the real client's, since gunicorn trusts ``X-Forwarded-For``
  only from the gateway (``forwarded_allow_ips``).
* Fixed windows: one atomic INCR per request in Redis, exact across the fleet.
* Redis trouble: short socket timeouts, then slowapi's in-memory fallback (per worker, so
  a quota is looser until Redis comes back) and ``swallow_errors``; never a failed request.

The check is synchronous (slowapi uses the blocking redis client) and runs on the event
loop: two loopback round trips per request (the hit, and the window read behind the
``X-RateLimit-*`` headers). The bench measures what that costs.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from starlette.responses import Response

from modelgate.auth import presented_key, require_client
from modelgate.errors import (
    RateLimited,
    error_response,
    is_protocol_path,
    protocol_error_response,
)
from modelgate.settings import Settings

log = logging.getLogger("modelgate.ratelimit")

PREDICT_SCOPE = "predict"
BATCH_SCOPE = "batch"


def client_identity(request: Request) -> str:
    """Whom a quota belongs to: the API key's digest, else the client address."""
    key = presented_key(request)
    if key is not None:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:24]
    host = request.client.host if request.client else "unknown"
    return "ip:" + host


def build_limiter(settings: Settings) -> Limiter:
    limits = settings.rate_limit
    timeout_s = limits.timeout_ms / 1000
    if settings.redis_url:
        storage_uri = settings.redis_url
        options: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "health_check_interval": 0,
        }
    else:
        if limits.enabled:
            log.warning("rate limits without Redis are per worker, not fleet-wide")
        storage_uri, options = "memory://", {}
    return Limiter(
        key_func=client_identity,
        enabled=limits.enabled,
        strategy="fixed-window",
        storage_uri=storage_uri,
        storage_options=options,
        # Headers are ours (limit_headers): integer reset times, and Retry-After only on 429.
        headers_enabled=False,
        in_memory_fallback_enabled=True,
        swallow_errors=True,
        key_prefix="modelgate",
        # Not a stray .env in the working directory: see slowapi.env.
        config_filename=str(Path(__file__).with_name("slowapi.env")),
    )


def limit_headers(limiter: Limiter, request: Request, denied: bool) -> dict[str, str]:
    """``X-RateLimit-*`` (and ``Retry-After`` when ``denied``) for the limit this request
    was counted in."""
    current = getattr(request.state, "view_rate_limit", None)
    if current is None:
        return {}
    item, args = current
    try:
        reset_at, remaining = limiter.limiter.get_window_stats(item, *args)
    except Exception:  # Redis failed between the hit and here: the answer stands.
        return {"Retry-After": "1"} if denied else {}
    headers = {
        "X-RateLimit-Limit": str(item.amount),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(int(reset_at) + 1),  # epoch seconds
    }
    if denied:
        headers["Retry-After"] = str(max(1, int(reset_at - time.time()) + 1))
    return headers


Endpoint = Callable[..., Awaitable[Response]]


def quota(limiter: Limiter, limit: str, scope: str) -> Callable[[Endpoint], Endpoint]:
    """For a prediction route: the client key (when keys are configured), then slowapi's
    shared limit for the route class, then the handler; ``X-RateLimit-*`` on every answer."""
    shared = limiter.shared_limit(limit, scope=scope)

    def decorate(endpoint: Endpoint) -> Endpoint:
        checked = shared(endpoint)

        @functools.wraps(endpoint)
        async def with_headers(*args: Any, **kwargs: Any) -> Response:
            await require_client(kwargs["request"])
            response: Response = await checked(*args, **kwargs)
            response.headers.update(limit_headers(limiter, kwargs["request"], denied=False))
            return response

        return with_headers

    return decorate


async def _rate_limited(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RateLimitExceeded)
    limiter: Limiter = request.app.state.limiter
    headers = limit_headers(limiter, request, denied=True)
    scope = exc.limit.scope if exc.limit is not None else None
    request.app.state.metrics.rate_limited.labels(scope or "route").inc()
    message = f"rate limit exceeded: {exc.detail}; retry after {headers['Retry-After']}s"
    if is_protocol_path(request.url.path):
        return protocol_error_response(429, message, headers)
    return error_response(429, RateLimited.code, message, headers=headers)


def install_rate_limiter(app: FastAPI, limiter: Limiter) -> None:
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limited)
