"""API keys for clients and a separate admin key.

Keys are configured as sha256 hex digests (``MODELGATE_AUTH__API_KEY_SHA256='["…"]'``),
never in clear text. A presented key is hashed and compared with every configured digest
in constant time (``hmac.compare_digest``, and no early exit), so neither the comparison
nor the position of a match leaks through timing.

* Client keys: when none are configured, prediction routes are open; when some are,
  a request needs one (401 without, 403 with a wrong one).
* Admin key: admin routes answer 404 while no admin key is configured (admin is off),
  401 without a key, 403 with a wrong one — a client key is never an admin key.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request

from modelgate.edge.worker_state import worker_state
from modelgate.errors import Forbidden, ModelGateError, Unauthorized
from modelgate.settings import Settings


class AdminDisabled(ModelGateError):
    status_code = 404
    code = "not_found"


def presented_key(request: Request) -> str | None:
    """The key from ``X-API-Key`` or ``Authorization: Bearer <key>``.

    Read from the ASGI header list (names arrive lower-cased): on every prediction,
    Starlette's ``Headers`` would cost more than the lookup itself."""
    auth = b""
    name: bytes
    value: bytes
    for name, value in request.scope["headers"]:
        if name == b"x-api-key" and value:
            return value.decode("latin-1")
        if name == b"authorization" and not auth:
            auth = value
    scheme, _, token = auth.decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def matches_any(key: str, digests: list[str]) -> bool:
    presented = hashlib.sha256(key.encode()).hexdigest().encode()
    found = False
    for digest in digests:
        found |= hmac.compare_digest(presented, digest.lower().encode())
    return found


def check_client(request: Request, settings: Settings) -> None:
    """The client key check of every prediction (``guard.py``): 401 without a key, 403
    with a wrong one, nothing when no client keys are configured."""
    digests = settings.auth.api_key_sha256
    if not digests:
        return
    key = presented_key(request)
    if key is None:
        raise Unauthorized("an API key is required (X-API-Key or Authorization: Bearer)")
    if not matches_any(key, digests):
        raise Forbidden("the API key is not valid")


async def require_client(request: Request) -> None:
    check_client(request, worker_state(request).settings)


async def require_admin(request: Request) -> None:
    settings = worker_state(request).settings
    digest = settings.auth.admin_key_sha256
    if not digest:
        raise AdminDisabled("admin routes are disabled (no admin key configured)")
    key = presented_key(request)
    if key is None:
        raise Unauthorized("the admin key is required")
    if not matches_any(key, [digest]):
        raise Forbidden("the admin key is not valid")


ClientDep = Annotated[None, Depends(require_client)]
AdminDep = Annotated[None, Depends(require_admin)]
