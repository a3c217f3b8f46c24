"""Open Inference Protocol (KServe V2, Triton's HTTP API) over the same prediction service.

A thin translation: tensors in, ``PredictionService.run`` (cache, batching, quotas and
metrics as for the native API), tensors out. JSON tensors (flat or nested ``data``) and the
binary tensor extension are both accepted; the body is read whatever its Content-Type,
since tritonclient sends none for JSON. Errors are ``{"error": "..."}`` (errors.py).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from modelgate import __version__
from modelgate.auth import require_admin
from modelgate.deps import (
    ControlDep,
    LifecycleDep,
    RepositoryDep,
    json_response,
    read_body,
)
from modelgate.errors import InvalidInput, MalformedRequest, ModelNotFound
from modelgate.ratelimit import BATCH_SCOPE, quota
from modelgate.repository import (
    ModelRepository,
    check_name,
    check_version,
    discover,
    version_order,
)
from modelgate.runtime import LoadedModel
from modelgate.service import PredictionService
from modelgate.settings import Settings
from modelgate.tensors import NUMPY_TYPES, input_spec, output_specs, output_tensors
from modelgate.validation import InputValidator, parse_json

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


# --- requests ---------------------------------------------------------------------------


def split_body(request: Request, body: bytes) -> tuple[Any, bytes]:
    """The JSON header and the binary tensor data after it (binary tensor extension)."""
    declared = request.headers.get(HEADER_LENGTH)
    if declared is None:
        return parse_json(body), b""
    # ASCII digits only, and few of them: str.isdigit() accepts "²", which int() refuses,
    # and int() refuses over 4300 digits; either was a 500.
    if not _HEADER_LENGTH_VALUE.fullmatch(declared) or int(declared) > len(body):
        raise MalformedRequest(f"{HEADER_LENGTH} is {declared[:40]!r} for a {len(body)}-byte body")
    size = int(declared)
    return parse_json(body[:size]), body[size:]


def input_tensor(
    model: LoadedModel, validator: InputValidator, payload: Any, binary: bytes, max_rows: int
) -> np.ndarray:
    """The request's one input tensor as (n, F) float32, validated like native input."""
    if not isinstance(payload, dict):
        raise InvalidInput("inference request must be a JSON object")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidInput(
            f"expected exactly one input tensor named '{input_spec(model.manifest).name}'"
        )
    tensor = inputs[0]
    spec = input_spec(model.manifest)
    if tensor.get("name") != spec.name:
        raise InvalidInput(
            f"unexpected input {tensor.get('name')!r}; the model's input is {spec.name!r}"
        )
    if tensor.get("datatype") != spec.datatype:
        raise InvalidInput(
            f"input {spec.name!r}: datatype {tensor.get('datatype')!r} does not match the "
            f"model's {spec.datatype}"
        )
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or shape[1] != spec.shape[1]
    ):
        raise InvalidInput(
            f"input {spec.name!r}: shape {shape} does not match the model's {spec.shape}"
        )
    # Sizes before work: more rows than a request may hold is refused before the data is
    # looked at (a 4 MiB body of numbers would otherwise become a huge array first).
    if not 1 <= shape[0] <= max_rows:
        raise InvalidInput(f"input {spec.name!r}: expected 1 to {max_rows} rows, got shape {shape}")
    count = shape[0] * shape[1]
    params = parameters(tensor, "inputs[0].parameters")
    dtype = NUMPY_TYPES[spec.datatype]
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if type(size) is not int or size != count * dtype.itemsize or size > len(binary):
            raise InvalidInput(
                f"input {spec.name!r}: binary_data_size {size} does not hold shape {shape} "
                f"of {spec.datatype} ({len(binary)} bytes of binary data sent)"
            )
        values = np.frombuffer(binary[:size], dtype=dtype)
    else:
        data = tensor.get("data")
        if data is None:
            raise InvalidInput(f"input {spec.name!r}: no 'data' and no binary_data_size")
        values = _numbers(data, spec.name, count)
        if values.size != count:
            raise InvalidInput(
                f"input {spec.name!r}: {values.size} values do not fill shape {shape}"
            )
    return validator.matrix(values.reshape(shape[0], shape[1]), spec.name, max_rows)


def parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """An object's ``parameters``: absent, null or a JSON object; anything else is 400."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise MalformedRequest(f"{where}: must be a JSON object")
    return params


def _numbers(data: Any, name: str, count: int) -> np.ndarray:
    """FP32 ``data``, flat or one row per list: JSON numbers only. numpy alone would turn
    "1.5" and true into numbers, and raise OverflowError (a 500) on a 400-digit integer."""
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r}: data must be a list of numbers")
    flat: list[Any] = []
    for item in data:
        if type(item) is list:
            flat.extend(item)
        else:
            flat.append(item)
        if len(flat) > count:
            break
    if len(flat) != count:
        raise InvalidInput(f"input {name!r}: {len(flat)} values do not fill the shape")
    for value in flat:
        if type(value) is not float and type(value) is not int:
            raise InvalidInput(
                f"input {name!r}: data must be numbers for FP32, got {type(value).__name__}"
            )
    try:
        return np.asarray(flat, dtype=np.float64)
    except OverflowError:
        raise InvalidInput(f"input {name!r}: a number is out of range for FP32") from None


def requested_outputs(model: LoadedModel, payload: dict[str, Any]) -> list[tuple[str, bool]]:
    """(name, binary?) for each output to return, in order."""
    known = [s.name for s in output_specs(model.manifest)]
    default_binary = bool(parameters(payload, "parameters").get("binary_data_output", False))
    asked = payload.get("outputs")
    if not asked:
        return [(name, default_binary) for name in known]
    if not isinstance(asked, list):
        raise InvalidInput("'outputs' must be a list")
    out = []
    for item in asked:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in known:
            raise InvalidInput(f"unknown output {name!r}; the model's outputs are {known}")
        binary = parameters(item, "outputs[].parameters").get("binary_data", default_binary)
        out.append((name, bool(binary)))
    return out


def infer_response(
    model: LoadedModel,
    payload: dict[str, Any],
    requested: list[tuple[str, bool]],
    outputs: list[dict[str, Any]],
) -> Response:
    tensors = output_tensors(model.manifest, outputs)
    specs = {s.name: s for s in output_specs(model.manifest)}
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if "id" in payload:
        body["id"] = payload["id"]
    described: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in requested:
        array = tensors[name]
        out: dict[str, Any] = {
            "name": name,
            "datatype": specs[name].datatype,
            "shape": list(array.shape),
        }
        if binary:
            blob = array.astype(NUMPY_TYPES[specs[name].datatype]).tobytes()
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            out["data"] = array.reshape(-1).tolist()
        described.append(out)
    body["outputs"] = described
    if not blobs:
        return json_response(body)
    header = orjson.dumps(body)
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


# --- routes -----------------------------------------------------------------------------


def build_router() -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["v2"])
    # A V1/V2 request may carry many instances: charged like a native batch request.
    infer_quota = quota(BATCH_SCOPE)

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

    # Inference routes read request state rather than take FastAPI dependencies: they
    # are the hot path, and the prediction lane (lane.py) calls them directly.
    async def infer(request: Request, name: str, version: str | None) -> Response:
        service: PredictionService = request.state.service
        settings: Settings = request.state.settings
        model = service.repository.get(name, version)
        payload, binary = split_body(request, await read_body(request, settings.max_body_bytes))
        validator = service.validator(model)
        rows = input_tensor(model, validator, payload, binary, settings.max_batch_instances)
        requested = requested_outputs(model, payload)  # unknown outputs refused before running
        result = await service.run(model, rows)
        request.state.model, request.state.version = model.name, model.version
        return infer_response(model, payload, requested, result.outputs)

    @router.post("/models/{name}/infer")
    @infer_quota
    async def model_infer(name: str, request: Request) -> Response:
        """Inference with the model's default version."""
        return await infer(request, name, None)

    @router.post("/models/{name}/versions/{version}/infer")
    @infer_quota
    async def version_infer(name: str, version: str, request: Request) -> Response:
        """Inference with one version."""
        return await infer(request, name, version)

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
