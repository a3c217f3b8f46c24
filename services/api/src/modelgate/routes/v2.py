"""The Open Inference Protocol's (KServe V2) other routes: server and model metadata,
health, and the model repository extension (admin key only).

Inference itself (``POST /v2/models/{name}[/versions/{v}]/infer``) is a prediction route:
``protocols/v2.py``. Errors are ``{"error": "..."}`` (the protocol's error shape).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from modelgate import __version__
from modelgate.edge.auth import require_admin
from modelgate.edge.deps import (
    ControlDep,
    LifecycleDep,
    RepositoryDep,
    json_response,
    read_body,
)
from modelgate.errors import InvalidInput, MalformedRequest, ModelNotFound
from modelgate.inference.repository import (
    ModelRepository,
    check_name,
    check_version,
    discover,
    version_order,
)
from modelgate.inference.validation import parse_json
from modelgate.protocols.tensors import input_spec, output_specs

HEADER_LENGTH = "inference-header-content-length"
_HEADER_LENGTH_VALUE = re.compile(r"[0-9]{1,12}")
PLATFORMS = {"torch_export": "pytorch_export", "torchscript": "pytorch_libtorch"}


# --- metadata ---------------------------------------------------------------------------


def model_metadata(repository: ModelRepository, name: str, version: str | None) -> dict[str, Any]:
    model = repository.get(name, version)
    entry = repository.entry(name)
    return {
        "name": name,
        "versions": sorted(entry.versions, key=version_order),
        "platform": PLATFORMS[model.manifest.format.value],
        "inputs": [input_spec(model.manifest).describe()],
        "outputs": [s.describe() for s in output_specs(model.manifest)],
    }


# --- routes -----------------------------------------------------------------------------


def build_router() -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["v2"])

    @router.get("")
    async def server_metadata() -> Response:
        """Server name, version and the protocol extensions it supports."""
        return json_response(
            {
                "name": "modelgate",
                "version": __version__,
                "extensions": ["binary_tensor_data", "model_repository"],
            }
        )

    @router.get("/health/live")
    async def live() -> Response:
        return json_response({"live": True})

    @router.get("/health/ready")
    async def ready(repository: RepositoryDep, lifecycle: LifecycleDep) -> Response:
        ok = repository.ready() and not lifecycle.draining
        return json_response({"ready": ok}, 200 if ok else 503)

    @router.get("/models/{name}")
    async def metadata(name: str, repository: RepositoryDep) -> Response:
        return json_response(model_metadata(repository, name, None))

    @router.get("/models/{name}/versions/{version}")
    async def version_metadata(name: str, version: str, repository: RepositoryDep) -> Response:
        return json_response(model_metadata(repository, name, version))

    @router.get("/models/{name}/ready")
    async def model_ready(name: str, repository: RepositoryDep) -> Response:
        model = repository.get(name)
        return json_response({"name": name, "version": model.version, "ready": True})

    @router.get("/models/{name}/versions/{version}/ready")
    async def version_ready(name: str, version: str, repository: RepositoryDep) -> Response:
        repository.get(name, version)
        return json_response({"name": name, "version": version, "ready": True})

    # --- repository extension -----------------------------------------------------------

    @router.post("/repository/index", dependencies=[Depends(require_admin)])
    async def repository_index(repository: RepositoryDep) -> Response:
        """Every model version on disk, and whether it is loaded here (admin key only:
        it lists what is on disk and why a version was refused)."""
        index = []
        loaded = repository.models
        failures = {(f.name, f.version): f.reason for f in repository.failures}
        for name, versions in discover(repository.root).items():
            for version in versions:
                entry = loaded.get(name)
                ready = entry is not None and version in entry.versions
                item = {
                    "name": name,
                    "version": version,
                    "state": "READY" if ready else "UNAVAILABLE",
                }
                if not ready:
                    item["reason"] = failures.get((name, version), "not loaded")
                index.append(item)
        return json_response(index)

    async def _version_parameter(request: Request) -> str | None:
        """``{"parameters": {"version": "2"}}`` (or an empty body): the version, checked
        by the repository like every version from outside."""
        raw = await read_body(request, 64 * 1024)
        payload = parse_json(raw) if raw.strip() else {}
        if not isinstance(payload, dict):
            raise MalformedRequest("body: must be a JSON object")
        params = payload.get("parameters", {})
        if not isinstance(params, dict):
            raise MalformedRequest("parameters: must be a JSON object")
        version = params.get("version")
        return None if version is None else check_version(version, "parameters.version")

    @router.post("/repository/models/{name}/load", dependencies=[Depends(require_admin)])
    async def repository_load(
        name: str, request: Request, repository: RepositoryDep, control: ControlDep
    ) -> Response:
        """Load (make default) a version fleet-wide: ``{"parameters": {"version": "2"}}``,
        or the highest version on disk without one. Same path as the admin route."""
        version = await _version_parameter(request)
        if version is None:
            on_disk = discover(repository.root).get(check_name(name))
            if not on_disk:
                raise ModelNotFound(f"no model {name!r} in the repository")
            version = on_disk[-1]
        issued = await control.load(name, version)
        if not issued.outcome.applied:
            raise InvalidInput(issued.outcome.detail)
        return json_response({})

    @router.post("/repository/models/{name}/unload", dependencies=[Depends(require_admin)])
    async def repository_unload(name: str, request: Request, control: ControlDep) -> Response:
        """Unload a model (or one version: ``{"parameters": {"version": "1"}}``) fleet-wide."""
        await control.unload(name, await _version_parameter(request))
        return json_response({})

    return router
