"""Turn request JSON into float32 rows the model accepts, or say exactly what is wrong.

Validation is derived from the manifest: input names and order, dtypes and bounds. It is
written by hand rather than as a generated pydantic model because it runs on every
request and must report the field *and* the reason for every bad value in a batch.

Types are strict: a string is never coerced to a number (silent coercion hides client
bugs), a boolean is not a number, and an ``int`` input accepts ``3`` and ``3.0`` but not
``3.5``. Every accepted value is canonicalised to float32, so ``1`` and ``1.0`` (and any
key order) give identical rows, and therefore identical cache keys.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
import sys
from typing import Any

import msgspec
import numpy as np
import orjson

from modelgate.errors import FieldError, InvalidInput, MalformedRequest
from modelgate.inference.manifest import DType, InputSpec, Manifest
from modelgate.inference.repository import check_version


def parse_json(body: bytes) -> Any:
    """Parse a request body. NaN and Infinity are not JSON, but Python's json.dumps writes
    them, so they are parsed here and rejected by validation with the field's name (422)
    rather than as malformed JSON (400)."""
    if not body:
        raise MalformedRequest("request body is empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedRequest(f"request body is not valid JSON: {exc}") from None


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_value(spec: InputSpec, value: Any) -> float | str:
    """The value as a float, or a reason string if it is not acceptable."""
    if spec.dtype is DType.BOOL:
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, int) and value in (0, 1):
            return float(value)
        return f"expected a boolean, got {type_name(value)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if spec.dtype is DType.INT else "a number"
        return f"expected {kind}, got {type_name(value)}"
    try:
        number = float(value)
    except OverflowError:
        return "number is too large"
    if math.isnan(number):
        return "NaN is not allowed"
    if math.isinf(number):
        return "Infinity is not allowed"
    if spec.dtype is DType.INT and not number.is_integer():
        return f"expected an integer, got {value!r}"
    if spec.min is not None and number < spec.min:
        return f"must be >= {_fmt(spec.min)} (got {value!r})"
    if spec.max is not None and number > spec.max:
        return f"must be <= {_fmt(spec.max)} (got {value!r})"
    return number


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


_NUMBER_TYPES = frozenset({int, float})
# Up to this many values, the fast check runs in plain Python (``_row_valid``): below it,
# numpy's per-call overhead outweighs the checks themselves.
_PYTHON_CHECK_MAX = 32

# What the typed decoder (``_TypedBodies``) lets through for each dtype, before the
# whole-matrix checks: numbers (ints become floats) for numeric inputs, true/false or an
# integer for booleans. Booleans are never numbers and strings never anything, as in
# ``_check_value``.
_JSON_TYPES: dict[DType, Any] = {DType.FLOAT: float, DType.INT: float, DType.BOOL: bool | int}


class _TypedBodies:
    """Decoders for the two common bodies straight into typed rows, for one manifest:
    ``{"features": {...}}`` and ``{"instances": [{...}, ...]}`` with named features.

    msgspec checks names, presence and JSON types while it parses, in C, with no dict per
    instance: for 32 instances of 256 features, parsing and checking take half the time
    of ``orjson.loads`` and the bulk path. It only ever *accepts*: on anything unusual
    (an unknown or missing feature, a string, NaN, positional rows, …) the caller falls
    back to the general path, which parses again and names every problem.
    """

    def __init__(self, specs: list[InputSpec]) -> None:
        # Attribute names are positional: a feature may be called ``class`` or ``from``.
        row = msgspec.defstruct(
            "Row",
            [
                (f"c{i}", _JSON_TYPES[spec.dtype], msgspec.field(name=spec.name))
                for i, spec in enumerate(specs)
            ],
            forbid_unknown_fields=True,
            gc=False,
        )
        # Unknown top-level keys fail here too, so the general path refuses them by name.
        single = msgspec.defstruct(
            "Single", [("features", row)], forbid_unknown_fields=True, gc=False
        )
        batch = msgspec.defstruct(
            "Batch",
            [("instances", list[row])],  # type: ignore[valid-type]
            forbid_unknown_fields=True,
            gc=False,
        )
        self._single = msgspec.json.Decoder(single)
        self._batch = msgspec.json.Decoder(batch)
        # Counts instances without building them (see ``batch``).
        counted = msgspec.defstruct(
            "Counted", [("instances", list[msgspec.Raw] | None, None)], gc=False
        )
        self._count = msgspec.json.Decoder(counted)

    def single(self, body: bytes) -> tuple[Any, ...] | None:
        try:
            features = self._single.decode(body).features  # type: ignore[attr-defined]
        except (msgspec.DecodeError, RecursionError):
            return None
        return msgspec.structs.astuple(features)

    def refuse_too_many(self, body: bytes, max_instances: int) -> None:
        """Size before work: InvalidInput if ``body["instances"]`` holds more than
        ``max_instances`` items, found without building them. Every instance opens with
        "{" or "[", so a body with few of those is small enough; past that the instances
        are counted as raw spans (a 400k-instance body: ~20x cheaper than decoding its
        rows, then parsing them again to say there are too many)."""
        if body.count(b"{") + body.count(b"[") <= max_instances + 2:
            return
        try:
            instances = self._count.decode(body).instances  # type: ignore[attr-defined]
        except (msgspec.DecodeError, RecursionError):
            return  # not this shape: the general path names what is wrong
        if instances is not None and len(instances) > max_instances:
            n = len(instances)
            raise InvalidInput.for_fields(
                [FieldError("instances", f"at most {max_instances} instances per request, got {n}")]
            )

    def batch(self, body: bytes, max_instances: int) -> list[tuple[Any, ...]] | None:
        self.refuse_too_many(body, max_instances)
        try:
            instances = self._batch.decode(body).instances  # type: ignore[attr-defined]
        except (msgspec.DecodeError, RecursionError):
            return None
        if not 1 <= len(instances) <= max_instances:
            return None
        return list(map(msgspec.structs.astuple, instances))


class InputValidator:
    """Validates instances against one manifest; cheap to reuse, built once per version."""

    def __init__(self, manifest: Manifest) -> None:
        self.specs = manifest.inputs
        self.names = manifest.input_names
        self._index = {name: i for i, name in enumerate(self.names)}
        # For the bulk path (``_bulk``): the features of a named instance in order, the
        # bounds as vectors, the integer columns. Booleans take the per-value path.
        self._pick = operator.itemgetter(*self.names) if len(self.names) > 1 else None
        self._lo = np.array([-np.inf if s.min is None else s.min for s in self.specs])
        self._hi = np.array([np.inf if s.max is None else s.max for s in self.specs])
        self._int_cols = list(manifest.int_columns)
        self._bool_cols = list(manifest.bool_columns)
        self._typed = _TypedBodies(self.specs)
        # For ``_row_valid``: (lowest, highest, integer?, boolean?) per feature. An unbounded
        # side is the largest float, so one chained comparison also turns away NaN and ±Inf.
        big = sys.float_info.max
        self._row_checks = [
            (
                -big if s.min is None else s.min,
                big if s.max is None else s.max,
                s.dtype is DType.INT,
                s.dtype is DType.BOOL,
            )
            for s in self.specs
        ]

    def single_body(self, body: bytes) -> np.ndarray:
        """A single-prediction request body → a (1, n_features) float32 array."""
        fast = self._fast_single(body)
        if fast is not None:
            return fast
        payload = parse_json(body)
        refuse_unknown_keys(payload, "features")
        return self.single(payload)

    def features_body(self, body: bytes, max_instances: int) -> tuple[np.ndarray, bool]:
        """The single routes' body: ``{"features": <one instance>}`` → ((1, n_features),
        False), or the matrix form ``{"features": [[...], [...]]}`` (rows in manifest
        order, up to ``max_instances``) → ((rows, n_features), True)."""
        fast = self._fast_single(body)
        if fast is not None:
            return fast, False
        payload = parse_json(body)
        refuse_unknown_keys(payload, "features")
        features = _member(payload, "features", "object with 'features'")
        if isinstance(features, list) and features and isinstance(features[0], list):
            return self.instances(features, max_instances, "features"), True
        return self.single(payload), False

    def _fast_single(self, body: bytes) -> np.ndarray | None:
        """One valid instance, checked at C speed; None for anything else."""
        row = self._typed.single(body)
        if row is None:
            return None
        # numpy's per-call overhead outweighs a few features' checks in Python.
        if len(row) <= _PYTHON_CHECK_MAX:
            return np.array([row], dtype=np.float32) if self._row_valid(row) else None
        values = np.array([row], dtype=np.float64)
        return values.astype(np.float32) if self._all_valid(values) else None

    def refuse_too_many(self, body: bytes, max_instances: int) -> None:
        """InvalidInput if the body's ``instances`` are more than ``max_instances``,
        decided before any row is built (V1's row format uses it too)."""
        self._typed.refuse_too_many(body, max_instances)

    def batch_body(self, body: bytes, max_instances: int) -> np.ndarray:
        """A batch request body → an (n, n_features) float32 array, 1 <= n <= max."""
        rows = self._typed.batch(body, max_instances)
        if rows is not None:
            values = np.array(rows, dtype=np.float64)
            if self.valid(values):
                return values.astype(np.float32)
        payload = parse_json(body)
        refuse_unknown_keys(payload, "instances")
        return self.batch(payload, max_instances)

    def row(self, instance: Any, where: str, errors: list[FieldError]) -> list[float]:
        """One instance (named object or positional list) → floats; appends to errors."""
        out = [0.0] * len(self.specs)
        if isinstance(instance, dict):
            for name in instance:
                if name not in self._index:
                    errors.append(FieldError(f"{where}.{name}", "unknown feature"))
            for i, spec in enumerate(self.specs):
                if spec.name not in instance:
                    errors.append(FieldError(f"{where}.{spec.name}", "required feature missing"))
                    continue
                checked = _check_value(spec, instance[spec.name])
                if isinstance(checked, str):
                    errors.append(FieldError(f"{where}.{spec.name}", checked))
                else:
                    out[i] = checked
        elif isinstance(instance, list):
            if len(instance) != len(self.specs):
                errors.append(
                    FieldError(
                        where,
                        f"expected {len(self.specs)} values in the order "
                        f"{', '.join(self.names)}; got {len(instance)}",
                    )
                )
                return out
            for i, (spec, value) in enumerate(zip(self.specs, instance, strict=True)):
                checked = _check_value(spec, value)
                if isinstance(checked, str):
                    errors.append(FieldError(f"{where}[{i}] ({spec.name})", checked))
                else:
                    out[i] = checked
        else:
            errors.append(
                FieldError(
                    where,
                    f"expected an object of named features or an array of "
                    f"{len(self.specs)} values, got {type_name(instance)}",
                )
            )
        return out

    def single(self, payload: Any) -> np.ndarray:
        """``{"features": ...}`` → a (1, n_features) float32 array."""
        features = _member(payload, "features", "object with 'features'")
        # The fast check first, as for a batch: a positional row of 256 features would
        # otherwise be checked value by value, slower than the same row sent as a batch.
        bulk = self._bulk([features])
        if bulk is not None:
            return bulk
        errors: list[FieldError] = []
        row = self.row(features, "features", errors)
        if errors:
            raise InvalidInput.for_fields(errors)
        return np.array([row], dtype=np.float32)

    def batch(self, payload: Any, max_instances: int) -> np.ndarray:
        """``{"instances": [...]}`` → an (n, n_features) float32 array, 1 <= n <= max."""
        return self.instances(
            _member(payload, "instances", "object with 'instances'"), max_instances
        )

    def instances(self, instances: Any, max_instances: int, field: str = "instances") -> np.ndarray:
        """A list of instances (named objects or positional lists) → an (n, n_features)
        float32 array, 1 <= n <= max; errors are named ``<field>[i]…`` (``instances`` for
        the batch routes and V1, ``features`` for the matrix form)."""
        if not isinstance(instances, list):
            raise InvalidInput.for_fields(
                [FieldError(field, f"expected an array, got {type_name(instances)}")]
            )
        if not instances:
            raise InvalidInput.for_fields([FieldError(field, "must not be empty")])
        if len(instances) > max_instances:
            raise InvalidInput.for_fields(
                [
                    FieldError(
                        field,
                        f"at most {max_instances} instances per request, got {len(instances)}",
                    )
                ]
            )
        bulk = self._bulk(instances)
        if bulk is not None:
            return bulk
        errors: list[FieldError] = []
        rows = [self.row(inst, f"{field}[{i}]", errors) for i, inst in enumerate(instances)]
        if errors:
            raise InvalidInput.for_fields(errors)
        return np.array(rows, dtype=np.float32)

    def _bulk(self, instances: list[Any]) -> np.ndarray | None:
        """The common case at C speed: every instance complete, every value a plain number
        within its bounds. ``None`` as soon as anything is off, and the per-value path
        (``row``) then finds and names every problem; so this path accepts exactly what
        that one accepts, and gives the same float32 rows. About 10× faster on 32 rows of
        256 features, where per-value checks cost more than the model."""
        if self._bool_cols or self._pick is None:
            return None
        n = len(self.names)
        try:
            if isinstance(instances[0], dict):
                if any(len(inst) != n for inst in instances):
                    return None  # unknown or missing features
                rows = list(map(self._pick, instances))
            elif any(type(inst) is not list or len(inst) != n for inst in instances):
                return None
            else:
                rows = instances
        except (KeyError, TypeError):  # a missing feature, a list among objects, …
            return None
        if not _NUMBER_TYPES.issuperset(map(type, itertools.chain.from_iterable(rows))):
            return None  # strings, booleans, nulls, nested values: named by ``row``
        try:
            values = np.array(rows, dtype=np.float64)
        except OverflowError:
            return None
        return values.astype(np.float32) if self.valid(values) else None

    def flat_rows(self, flat: list[float], n_rows: int) -> np.ndarray | None:
        """``n_rows`` rows given as one flat list of floats (a V2 tensor's ``data``, as
        msgspec decoded it) → (n_rows, n_features) float32, or None if any value fails the
        fast check; the caller's general path then names what is wrong."""
        width = len(self.specs)
        if len(flat) != n_rows * width:
            return None
        if len(flat) <= _PYTHON_CHECK_MAX:
            rows = (flat[i : i + width] for i in range(0, len(flat), width))
            if not all(map(self._row_valid, rows)):
                return None
            return np.array(flat, dtype=np.float32).reshape(n_rows, width)
        values = np.array(flat, dtype=np.float64).reshape(n_rows, width)
        return values.astype(np.float32) if self._all_valid(values) else None

    def valid(self, values: np.ndarray) -> bool:
        """The fast check, shared by every protocol's rows: every value of an (n,
        n_features) float64 matrix finite, within its bounds, whole for integer inputs, 0 or
        1 for booleans. No reasons: on False, the explaining checks (``row``, ``matrix``)
        name every problem. A few values are checked in plain Python, more with a few
        whole-matrix numpy operations (each costs microseconds, whatever the size)."""
        if values.size <= _PYTHON_CHECK_MAX:
            return all(self._row_valid(row) for row in values.tolist())
        return self._all_valid(values)

    def _row_valid(self, row: tuple[Any, ...] | list[Any]) -> bool:
        """``_all_valid`` for one decoded row of a few features, in plain Python."""
        for value, (lo, hi, integer, boolean) in zip(row, self._row_checks, strict=True):
            if boolean:
                if value not in (0, 1):
                    return False
            elif not lo <= value <= hi or (integer and not value.is_integer()):
                return False
        return True

    def _all_valid(self, values: np.ndarray) -> bool:
        """Every value of an (n, n_features) float64 matrix finite, within its bounds, whole
        for integer inputs and 0 or 1 for booleans: a few whole-matrix operations."""
        if not (
            np.isfinite(values).all() and (values >= self._lo).all() and (values <= self._hi).all()
        ):
            return False
        if self._int_cols:
            ints = values[:, self._int_cols]
            if not (ints == np.round(ints)).all():
                return False
        if self._bool_cols:
            flags = values[:, self._bool_cols]
            if not ((flags == 0) | (flags == 1)).all():
                return False
        return True

    def matrix(self, values: np.ndarray, where: str, max_rows: int) -> np.ndarray:
        """A numeric (n, n_features) tensor → float32 rows, with the same rules as JSON
        instances: finite, within bounds, whole numbers for ints, 0/1 for booleans."""
        if values.ndim != 2 or values.shape[1] != len(self.specs):
            raise InvalidInput.for_fields(
                [
                    FieldError(
                        where, f"expected shape [n, {len(self.specs)}], got {list(values.shape)}"
                    )
                ]
            )
        if not 1 <= values.shape[0] <= max_rows:
            raise InvalidInput.for_fields(
                [FieldError(where, f"expected 1 to {max_rows} rows, got {values.shape[0]}")]
            )
        rows = values.astype(np.float64, copy=False)
        if self.valid(rows):
            return rows.astype(np.float32)
        # Something is wrong: name it, column by column.
        errors: list[FieldError] = []
        for col, spec in enumerate(self.specs):
            column = rows[:, col]
            bad = ~np.isfinite(column)
            reason = "NaN and Infinity are not allowed"
            checks: list[tuple[np.ndarray, str]] = [(bad, reason)]
            finite = np.where(bad, 0.0, column)
            if spec.dtype is DType.BOOL:
                checks.append((~np.isin(finite, (0.0, 1.0)) & ~bad, "expected 0 or 1 (boolean)"))
            elif spec.dtype is DType.INT:
                checks.append((finite != np.round(finite), "expected a whole number"))
            if spec.min is not None:
                checks.append((finite < spec.min, f"must be >= {_fmt(spec.min)}"))
            if spec.max is not None:
                checks.append((finite > spec.max, f"must be <= {_fmt(spec.max)}"))
            for mask, why in checks:
                for r in np.flatnonzero(mask)[:5]:
                    errors.append(
                        FieldError(
                            f"{where}[{r}][{col}] ({spec.name})",
                            f"{why} (got {float(column[r])!r})",
                        )
                    )
        if errors:
            raise InvalidInput.for_fields(errors[:50])
        return rows.astype(np.float32)


# Keys other APIs and tutorials put in a prediction body, and what modelgate wants instead.
_ALIASES = {
    "instances": "one instance goes in 'features'; several go to POST …/predict/batch",
    "features": "a batch's rows go in 'instances'",
    "inputs": "send 'features', or the V2 protocol's POST /v2/models/{name}/infer",
    "data": "send the instance as 'features'",
    "context": "modelgate takes no request context; remove it",
    "model_name": "name the model in the path: /models/{name}/predict",
    "model": "name the model in the path: /models/{name}/predict",
    "version": "name the version in the path: /models/{name}/versions/{v}/predict",
    "signature_name": "TF Serving's body goes to POST /v1/models/{name}:predict",
}


def refuse_unknown_keys(payload: Any, key: str) -> None:
    """A native body holds ``key`` and nothing else: a key the server ignored would hide a
    client's mistake (a version asked for in the body, served by another). 422 naming
    every unknown key, with what to send instead when it is a known alias."""
    if not isinstance(payload, dict) or (len(payload) == 1 and key in payload):
        return
    errors = [
        FieldError(k, f"unknown field; {_ALIASES[k]}" if k in _ALIASES else "unknown field")
        for k in payload
        if k != key and k != "model_version"  # read by the route (body_version)
    ]
    if errors:
        raise InvalidInput.for_fields(errors)


def body_version(body: bytes, path_version: str | None) -> str | None:
    """The version a native body asks for with ``"model_version"``, else the path's.

    Read before the model is picked, so only bodies that mention the key are parsed here
    (they then take the general path: the typed one forbids the key). The value is
    checked as every version from outside is; a body that contradicts its path is a 422.
    """
    if b'"model_version"' not in body:
        return path_version
    payload = parse_json(body)
    if not isinstance(payload, dict) or "model_version" not in payload:
        return path_version
    # The one check of versions from outside; accepts JSON 2 as "2".
    value = check_version(payload["model_version"], "model_version")
    if path_version is not None and value != path_version:
        raise InvalidInput.for_fields(
            [
                FieldError(
                    "model_version",
                    f"{value!r} contradicts version {path_version!r} in the path; send one",
                )
            ]
        )
    return value


def _member(payload: Any, key: str, expected: str) -> Any:
    if not isinstance(payload, dict):
        raise InvalidInput.for_fields(
            [FieldError("body", f"expected an {expected}, got {type_name(payload)}")]
        )
    if key not in payload:
        raise InvalidInput.for_fields([FieldError(key, "required field missing")])
    return payload[key]
