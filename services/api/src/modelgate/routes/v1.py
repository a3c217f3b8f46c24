"""TF Serving's REST API (``/v1/models/...``): model status and metadata.

Prediction (``:predict``) is a prediction route: ``protocols/v1.py``. Errors are
``{"error": "..."}`` (the protocol's error shape).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from modelgate.edge.deps import RepositoryDep, json_response
from modelgate.inference.repository import ModelRepository, version_order
from modelgate.inference.runtime import LoadedModel
from modelgate.protocols.tensors import output_specs

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


def build_router() -> APIRouter:
    router = APIRouter(prefix="/v1/models", tags=["v1"])

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

    return router
