"""Model listing and metadata: what this replica serves, and which version is default."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from modelgate.edge.deps import ControlDep, RepositoryDep, SettingsDep, json_response
from modelgate.inference.repository import ModelEntry, version_order
from modelgate.inference.runtime import LoadedModel

router = APIRouter(tags=["models"])


def describe_version(model: LoadedModel, is_default: bool, full: bool) -> dict[str, Any]:
    m = model.manifest
    out: dict[str, Any] = {
        "name": m.name,
        "version": m.version,
        "default": is_default,
        "task": m.task.value,
        "format": m.format.value,
        "sha256": model.sha256,
        "loaded_at": model.loaded_at.isoformat(),
    }
    if full:
        out["description"] = m.description
        out["inputs"] = [spec.model_dump(exclude_none=True) for spec in m.inputs]
        out["outputs"] = m.outputs.model_dump()
        out["metadata"] = m.metadata
        out["size_bytes"] = model.size_bytes
    return out


def describe_entry(entry: ModelEntry, full: bool) -> dict[str, Any]:
    return {
        "name": entry.name,
        "default_version": entry.default_version,
        "pinned": entry.pinned,
        "versions": [
            describe_version(m, v == entry.default_version, full)
            for v, m in sorted(entry.versions.items(), key=lambda kv: version_order(kv[0]))
        ],
    }


@router.get("/models")
async def list_models(repository: RepositoryDep, settings: SettingsDep) -> Response:
    """Every model served here, each version, and which version is the default."""
    return json_response(
        {
            "instance": settings.instance,
            "default_model": repository.default_name,
            "models": [describe_entry(e, full=False) for _, e in sorted(repository.models.items())],
        }
    )


@router.get("/models/{name}")
async def get_model(
    name: str, repository: RepositoryDep, settings: SettingsDep, control: ControlDep
) -> Response:
    """One model: every loaded version with its manifest, inputs and training metadata,
    and ``fleet``: the version every live worker of every replica runs (from Redis)."""
    entry = repository.entry(name)
    return json_response(
        {
            "instance": settings.instance,
            **describe_entry(entry, full=True),
            "fleet": await control.fleet(name),
        }
    )


@router.get("/model/info")
async def model_info(repository: RepositoryDep, settings: SettingsDep) -> Response:
    """The default model's default version: manifest, sha256 and when it was loaded."""
    model = repository.get()
    return json_response(
        {"instance": settings.instance, **describe_version(model, True, full=True)}
    )
