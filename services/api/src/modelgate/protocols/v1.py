"""TF Serving's REST API (``/v1/models/...:predict``) over the same prediction service.

Takes the row format (``{"instances": [...]}``, each instance an object of named
features or a list in manifest order) or the columnar format (``{"inputs": {"feature":
[values…], …}}``), and answers ``{"predictions": [...]}`` or ``{"outputs": ...}``
respectively, with the output tensors named in ``tensors.py``. Errors are
``{"error": "..."}``, and 400 for invalid input (TF Serving's clients expect both). The
model-status and metadata routes are in ``routes/v1.py``.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from modelgate.edge.deps import json_response, read_body
from modelgate.edge.worker_state import WorkerState
from modelgate.errors import FieldError, InvalidInput, message_only_response
from modelgate.inference.runtime import LoadedModel
from modelgate.inference.service import Prediction
from modelgate.inference.validation import parse_json
from modelgate.protocols.base import Decoded, Protocol, Route
from modelgate.protocols.tensors import output_specs, row_values
from modelgate.shared.ratelimit import BATCH_SCOPE

SIGNATURE = "serving_default"


def instances_of(model: LoadedModel, payload: Any, max_instances: int) -> tuple[list[Any], bool]:
    """The request's instances, and whether it was columnar. Counts are checked before
    any row is built: a 4 MiB columnar body would otherwise become ~500k dicts."""
    if not isinstance(payload, dict):
        raise InvalidInput.for_fields([FieldError("body", "expected a JSON object")])
    signature = payload.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise InvalidInput.for_fields([FieldError("signature_name", f"only {SIGNATURE!r} exists")])
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


async def decode(
    request: Request, worker: WorkerState, name: str | None, version: str | None
) -> Decoded:
    started = time.perf_counter()
    settings = worker.settings
    model = worker.repository.get(name, version)
    body = await read_body(request, settings.max_body_bytes)
    validator = worker.service.validator(model)
    validator.refuse_too_many(body, settings.max_batch_instances)
    payload = parse_json(body)
    instances, columnar = instances_of(model, payload, settings.max_batch_instances)
    rows = validator.instances(instances, settings.max_batch_instances)
    return Decoded(model, rows, started, columnar)


def encode(decoded: Decoded, result: Prediction) -> Response:
    manifest = decoded.model.manifest
    per_row = row_values(manifest, result.outputs)
    names = [s.name for s in output_specs(manifest)]
    single = len(names) == 1
    if decoded.context:  # columnar
        if single:
            return json_response({"outputs": [r[names[0]] for r in per_row]})
        return json_response({"outputs": {n: [r[n] for r in per_row] for n in names}})
    if single:
        return json_response({"predictions": [r[names[0]] for r in per_row]})
    return json_response({"predictions": per_row})


PROTOCOL = Protocol(
    name="v1",
    tag="v1",
    # A V1 request may carry many instances: charged like a native batch request.
    routes=(
        Route("/v1/models/{name}:predict", "model_predict",
              "TF Serving predict with the model's default version.", BATCH_SCOPE, decode, encode),
        Route("/v1/models/{name}/versions/{version}:predict", "version_predict",
              "TF Serving predict with one version.", BATCH_SCOPE, decode, encode),
    ),
    error=message_only_response,
    prefixes=("/v1/",),
)  # fmt: skip
