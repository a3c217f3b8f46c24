"""TF Serving's REST API shape (``/v1/models/...``) over the same prediction service.

``:predict`` takes the row format (``{"instances": [...]}``, each instance an object of
named features or a list in manifest order) or the columnar format (``{"inputs":
{"feature": [values…], …}}``), and answers ``{"predictions": [...]}`` or ``{"outputs":
...}`` respectively, with the output tensors named in tensors.py. Errors are
``{"error": "..."}`` (errors.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from modelgate.deps import RepositoryDep, json_response, read_body
from modelgate.errors import FieldError, InvalidInput
from modelgate.ratelimit import BATCH_SCOPE, quota
from modelgate.repository import ModelRepository, version_order
from modelgate.runtime import LoadedModel
from modelgate.service import PredictionService
from modelgate.settings import Settings
from modelgate.tensors import output_specs, row_values
from modelgate.validation import parse_json

DT_TYPES = {"FP32": "DT_FLOAT", "INT64": "DT_INT64"}
_SIGNATURE = "serving_default"


def version_status(repository: ModelRepository, name: str, version: str | None) -> dict[str, Any]:
    entry = repository.entry(name)
    versions = [version] if version is not None else sorted(entry.versions, key=version_order)
    for v in versions:
        repository.get(name, v)  # 404 for a version that is not loaded
    return {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in versions
        ]
    }


def _tensor_info(name: str, dtype: str, shape: list[int]) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in shape],
            "unknown_rank": False,
        },
        "name": name,
    }


def metadata(model: LoadedModel) -> dict[str, Any]:
    m = model.manifest
    inputs = {spec.name: _tensor_info(spec.name, "DT_FLOAT", [-1]) for spec in m.inputs}
    outputs = {s.name: _tensor_info(s.name, DT_TYPES[s.datatype], s.shape) for s in output_specs(m)}
    return {
        "model_spec": {"name": m.name, "signature_name": "", "version": m.version},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    _SIGNATURE: {
                        "inputs": inputs,
                        "outputs": outputs,
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }


def instances_of(model: LoadedModel, payload: Any, max_instances: int) -> tuple[list[Any], bool]:
    """The request's instances, and whether it was columnar. Counts are checked before
    any row is built: a 4 MiB columnar body would otherwise become ~500k dicts."""
    if not isinstance(payload, dict):
        raise InvalidInput.for_fields([FieldError("body", "expected a JSON object")])
    signature = payload.get("signature_name", _SIGNATURE)
    if signature != _SIGNATURE:
        raise InvalidInput.for_fields([FieldError("signature_name", f"only {_SIGNATURE!r} exists")])
    if ("instances" in payload) == ("inputs" in payload):
        raise InvalidInput.for_fields(
            [FieldError("body", "expected exactly one of 'instances' (rows) or 'inputs' (columns)")]
        )
    if "instances" in payload:
        return _bounded(payload["instances"], "instances", max_instances), False
    columns = payload["inputs"]
    if isinstance(columns, list):
        return _bounded(columns, "inputs", max_instances), True
    if not isinstance(columns, dict):
        raise InvalidInput.for_fields(
            [FieldError("inputs", "expected an object of columns or a list")]
        )
    names = model.manifest.input_names
    missing = [n for n in names if n not in columns]
    unknown = [n for n in columns if n not in names]
    errors = [FieldError(f"inputs.{n}", "required feature missing") for n in missing]
    errors += [FieldError(f"inputs.{n}", "unknown feature") for n in unknown]
    lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
    if not errors and (len(lengths) != 1 or -1 in lengths):
        errors.append(FieldError("inputs", "every column must be a list of the same length"))
    if errors:
        raise InvalidInput.for_fields(errors)
    n = lengths.pop()
    if not 1 <= n <= max_instances:
        raise InvalidInput.for_fields(
            [FieldError("inputs", f"expected 1 to {max_instances} values per column, got {n}")]
        )
    return [{name: columns[name][i] for name in names} for i in range(n)], True


def _bounded(instances: Any, field: str, max_instances: int) -> Any:
    if isinstance(instances, list) and len(instances) > max_instances:
        raise InvalidInput.for_fields(
            [
                FieldError(
                    field, f"at most {max_instances} instances per request, got {len(instances)}"
                )
            ]
        )
    return instances


def build_router() -> APIRouter:
    router = APIRouter(prefix="/v1/models", tags=["v1"])
    # A V1/V2 request may carry many instances: charged like a native batch request.
    predict_quota = quota(BATCH_SCOPE)

    @router.get("/{name}")
    async def status(name: str, repository: RepositoryDep) -> Response:
        return json_response(version_status(repository, name, None))

    @router.get("/{name}/versions/{version}")
    async def version_state(name: str, version: str, repository: RepositoryDep) -> Response:
        return json_response(version_status(repository, name, version))

    @router.get("/{name}/metadata")
    async def model_metadata(name: str, repository: RepositoryDep) -> Response:
        return json_response(metadata(repository.get(name)))

    @router.get("/{name}/versions/{version}/metadata")
    async def version_metadata(name: str, version: str, repository: RepositoryDep) -> Response:
        return json_response(metadata(repository.get(name, version)))

    # Prediction routes read request state rather than take FastAPI dependencies: they
    # are the hot path, and the prediction lane (lane.py) calls them directly.
    async def predict(request: Request, name: str, version: str | None) -> Response:
        service: PredictionService = request.state.service
        settings: Settings = request.state.settings
        model = service.repository.get(name, version)
        body = await read_body(request, settings.max_body_bytes)
        service.validator(model).refuse_too_many(body, settings.max_batch_instances)
        payload = parse_json(body)
        instances, columnar = instances_of(model, payload, settings.max_batch_instances)
        rows = service.validator(model).batch(
            {"instances": instances}, settings.max_batch_instances
        )
        result = await service.run(model, rows)
        request.state.model, request.state.version = model.name, model.version
        per_row = [row_values(model.manifest, o) for o in result.outputs]
        names = [s.name for s in output_specs(model.manifest)]
        single = len(names) == 1
        if columnar:
            if single:
                return json_response({"outputs": [r[names[0]] for r in per_row]})
            return json_response({"outputs": {n: [r[n] for r in per_row] for n in names}})
        if single:
            return json_response({"predictions": [r[names[0]] for r in per_row]})
        return json_response({"predictions": per_row})

    @router.post("/{name}:predict")
    @predict_quota
    async def model_predict(name: str, request: Request) -> Response:
        """TF Serving predict with the model's default version."""
        return await predict(request, name, None)

    @router.post("/{name}/versions/{version}:predict")
    @predict_quota
    async def version_predict(name: str, version: str, request: Request) -> Response:
        """TF Serving predict with one version."""
        return await predict(request, name, version)

    return router
