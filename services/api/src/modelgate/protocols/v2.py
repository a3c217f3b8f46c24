"""The Open Inference Protocol (KServe V2, Triton's HTTP API) over the same prediction service.

A thin translation: tensors in, ``PredictionService.run`` (cache, batching, quotas and
metrics as for the native API), tensors out. JSON tensors (flat or nested ``data``) and the
binary tensor extension are both accepted; the body is read whatever its Content-Type,
since tritonclient sends none for JSON. Errors are ``{"error": "..."}``, and 400 for
invalid input (tritonclient raises with that message). Server, health, metadata and
repository routes are in ``routes/v2.py``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelgate.edge.deps import json_response, read_body
from modelgate.edge.worker_state import WorkerState
from modelgate.errors import InvalidInput, MalformedRequest, message_only_response
from modelgate.inference.runtime import LoadedModel
from modelgate.inference.service import Prediction
from modelgate.inference.validation import InputValidator, parse_json
from modelgate.protocols.base import Decoded, Protocol, Route
from modelgate.protocols.tensors import NUMPY_TYPES, input_spec, output_specs, output_tensors
from modelgate.shared.ratelimit import BATCH_SCOPE

HEADER_LENGTH = "inference-header-content-length"
_HEADER_LENGTH_KEY = HEADER_LENGTH.encode()
_HEADER_LENGTH_VALUE = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True, slots=True)
class _Asked:
    """What the encoder needs from the request: its ``id`` (UNSET: none) and the outputs
    asked for."""

    id: Any
    outputs: list[tuple[str, bool]]


class _JsonTensor(msgspec.Struct, gc=False):
    name: str
    datatype: str
    shape: list[int]
    data: list[float]  # flat; nested rows take the general path
    parameters: dict[str, Any] | None = None


class _JsonRequest(msgspec.Struct, gc=False):
    """The common request, typed: one JSON tensor, the default outputs. msgspec checks
    the JSON types while it parses, in C (no dict per tensor, no list of Python values to
    walk again); like the native API's typed bodies it only ever *accepts*, and anything
    else (binary data, ``outputs``, a numeric ``id``, a value out of bounds, …) takes the
    general path, which parses again and says what is wrong."""

    inputs: list[_JsonTensor]
    id: str | msgspec.UnsetType = msgspec.UNSET
    parameters: dict[str, Any] | None = None
    outputs: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET  # present: the general path


_FAST = msgspec.json.Decoder(_JsonRequest)


def _fast_decode(
    model: LoadedModel, validator: InputValidator, body: bytes, max_rows: int
) -> tuple[np.ndarray, _Asked] | None:
    """The common request's rows and what it asks, or None for the general path."""
    try:
        request = _FAST.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    if len(request.inputs) != 1 or request.outputs is not msgspec.UNSET:
        return None
    tensor, spec = request.inputs[0], input_spec(model.manifest)
    shape = tensor.shape
    if (
        tensor.name != spec.name
        or tensor.datatype != spec.datatype
        or len(shape) != 2
        or shape[1] != spec.shape[1]
        or not 1 <= shape[0] <= max_rows
        or (tensor.parameters and "binary_data_size" in tensor.parameters)
    ):
        return None
    rows = validator.flat_rows(tensor.data, shape[0])
    if rows is None:
        return None
    binary = bool((request.parameters or {}).get("binary_data_output", False))
    outputs = [(s.name, binary) for s in output_specs(model.manifest)]
    return rows, _Asked(request.id, outputs)


def _header(request: Request, key: bytes) -> str | None:
    """One header's value, read off the ASGI scope: cheaper than ``request.headers``,
    which copies every header into a new object first."""
    value: bytes
    for name, value in request.scope["headers"]:
        if name == key:
            return value.decode("latin-1")
    return None


def split_body(request: Request, body: bytes) -> tuple[Any, bytes]:
    """The JSON header and the binary tensor data after it (binary tensor extension)."""
    declared = _header(request, _HEADER_LENGTH_KEY)
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
    request_id: Any,
    requested: list[tuple[str, bool]],
    outputs: np.ndarray,
) -> Response:
    """The answer; ``request_id`` is the request's ``id``, echoed unless UNSET (absent)."""
    tensors = output_tensors(model.manifest, outputs)
    specs = {s.name: s for s in output_specs(model.manifest)}
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request_id is not msgspec.UNSET:
        body["id"] = request_id
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


async def decode(
    request: Request, worker: WorkerState, name: str | None, version: str | None
) -> Decoded:
    started = time.perf_counter()
    settings = worker.settings
    model = worker.repository.get(name, version)
    body = await read_body(request, settings.max_body_bytes)
    validator = worker.service.validator(model)
    if _header(request, _HEADER_LENGTH_KEY) is None:
        fast = _fast_decode(model, validator, body, settings.max_batch_instances)
        if fast is not None:
            return Decoded(model, fast[0], started, fast[1])
    payload, binary = split_body(request, body)
    rows = input_tensor(model, validator, payload, binary, settings.max_batch_instances)
    outputs = requested_outputs(model, payload)  # unknown outputs refused before running
    return Decoded(model, rows, started, _Asked(payload.get("id", msgspec.UNSET), outputs))


def encode(decoded: Decoded, result: Prediction) -> Response:
    asked: _Asked = decoded.context
    return infer_response(decoded.model, asked.id, asked.outputs, result.outputs)


PROTOCOL = Protocol(
    name="v2",
    tag="v2",
    # A V2 request may carry many instances: charged like a native batch request.
    routes=(
        Route("/v2/models/{name}/infer", "model_infer",
              "Inference with the model's default version.", BATCH_SCOPE, decode, encode),
        Route("/v2/models/{name}/versions/{version}/infer", "version_infer",
              "Inference with one version.", BATCH_SCOPE, decode, encode),
    ),
    error=message_only_response,
    prefixes=("/v2",),  # "/v2" itself too (server metadata)
)  # fmt: skip
