"""Admin routes: fleet-wide load and unload of model versions (admin key only).

They answer 404 while no admin key is configured, so a deployment without one has no
admin surface at all. The gateway passes ``/admin/`` through to a replica (see the nginx
template); the admin key is what guards it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from modelgate.edge.auth import require_admin
from modelgate.edge.deps import ControlDep, json_response, read_body
from modelgate.errors import FieldError, InvalidInput
from modelgate.inference.repository import check_version
from modelgate.inference.validation import parse_json
from modelgate.shared.control import FleetControl, Issued

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])

_MAX_ADMIN_BODY = 4096


async def _version_field(request: Request, required: bool) -> str | None:
    """``{"version": "2"}``; an empty body is allowed when the version is optional."""
    raw = await read_body(request, _MAX_ADMIN_BODY)
    payload = parse_json(raw) if raw.strip() else {}
    if not isinstance(payload, dict):
        raise InvalidInput.for_fields([FieldError("body", "must be a JSON object")])
    unknown = sorted(set(payload) - {"version"})
    if unknown:
        raise InvalidInput.for_fields([FieldError(k, "unknown field") for k in unknown])
    version = payload.get("version")
    if version is None:
        if required:
            raise InvalidInput.for_fields([FieldError("version", "field required")])
        return None
    return check_version(version)


def _answer(issued: Issued, control: FleetControl) -> Response:
    command, outcome = issued.command, issued.outcome
    body: dict[str, Any] = {
        "action": command.action,
        "model": command.model,
        "version": command.version,
    }
    if issued.sha256 is not None:
        body["sha256"] = issued.sha256
    body |= {
        "command_id": issued.entry_id,
        "propagated": control.propagates,
        "applied_here": outcome.applied,
        "detail": outcome.detail,
        "instance": control.instance,
    }
    return json_response(body)


@router.post("/models/{name}/load")
async def load(name: str, request: Request, control: ControlDep) -> Response:
    """Verify a version, then make it the default on every worker of every replica."""
    version = await _version_field(request, required=True)
    assert version is not None
    return _answer(await control.load(name, version), control)


@router.post("/models/{name}/unload")
async def unload(name: str, request: Request, control: ControlDep) -> Response:
    """Stop serving one version (``{"version": "1"}``) or, without a body, the whole model."""
    version = await _version_field(request, required=False)
    return _answer(await control.unload(name, version), control)
