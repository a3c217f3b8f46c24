"""OpenAPI request bodies and examples for the prediction routes, taken from the manifests.

Prediction bodies are parsed by modelgate, so FastAPI can't infer their schema; routes
carry an ``x-modelgate-body`` marker and this module fills in the schema and an example
instance of the default model (built by ``Manifest.example_features``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from modelgate.edge.responses import add_responses
from modelgate.inference.manifest import VERSION, DType, Manifest
from modelgate.inference.repository import ModelRepository


def _feature_schema(manifest: Manifest | None) -> dict[str, Any]:
    if manifest is None:
        return {"type": "object", "additionalProperties": {"type": "number"}}
    props: dict[str, Any] = {}
    for spec in manifest.inputs:
        prop: dict[str, Any] = {
            "type": {"float": "number", "int": "integer", "bool": "boolean"}[spec.dtype.value]
        }
        if spec.dtype is not DType.BOOL:
            if spec.min is not None:
                prop["minimum"] = spec.min
            if spec.max is not None:
                prop["maximum"] = spec.max
        if spec.description:
            prop["description"] = spec.description
        props[spec.name] = prop
    named = {
        "type": "object",
        "properties": props,
        "required": manifest.input_names,
        "additionalProperties": False,
    }
    positional = {
        "type": "array",
        "items": {"type": "number"},
        "minItems": len(manifest.inputs),
        "maxItems": len(manifest.inputs),
        "description": "values in manifest order: " + ", ".join(manifest.input_names),
    }
    return {"oneOf": [named, positional]}


def _bodies(manifest: Manifest | None, max_instances: int) -> dict[str, dict[str, Any]]:
    instance = _feature_schema(manifest)
    example = manifest.example_features() if manifest else {}
    # Bodies are strict (validation.refuse_unknown_keys); a version may ride in the body.
    version = {
        "type": "string",
        "pattern": f"^({VERSION.pattern})$",
        "description": "run this version (as the versioned path does)",
    }
    # The matrix form: rows in manifest order on a single route, answered like a batch.
    matrix = {
        "type": "array",
        "items": instance["oneOf"][1] if "oneOf" in instance else {"type": "array"},
        "minItems": 1,
        "maxItems": max_instances,
        "description": "several rows in manifest order, answered like a batch",
    }
    single_features = {"oneOf": [*instance.get("oneOf", [instance]), matrix]}
    single = {
        "type": "object",
        "required": ["features"],
        "properties": {"features": single_features, "model_version": version},
        "additionalProperties": False,
    }
    batch = {
        "type": "object",
        "required": ["instances"],
        "properties": {
            "instances": {
                "type": "array",
                "items": instance,
                "minItems": 1,
                "maxItems": max_instances,
            },
            "model_version": version,
        },
        "additionalProperties": False,
    }
    return {
        "single": {"schema": single, "example": {"features": example}},
        "batch": {"schema": batch, "example": {"instances": [example, example]}},
    }


def install_openapi(app: FastAPI, repository_of: Any, max_instances: int) -> None:
    """Replace ``app.openapi`` with one that adds manifest-derived request bodies.

    ``repository_of`` returns the live ModelRepository (or None before the lifespan ran).
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        repository: ModelRepository | None = repository_of()
        manifest = None
        if repository is not None and repository.models:
            try:
                manifest = repository.get().manifest
            except Exception:  # no default version loaded: generic schema
                manifest = None
        bodies = _bodies(manifest, max_instances)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                kind = (
                    operation.pop("x-modelgate-body", None) if isinstance(operation, dict) else None
                )
                if kind in bodies:
                    operation["requestBody"] = {
                        "required": True,
                        "content": {"application/json": bodies[kind]},
                    }
        add_responses(schema)  # what each route answers: fields, examples, error shape
        if manifest is not None:
            app.openapi_schema = schema  # cache only once the real manifest is known
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
