"""The rank request, typed and validated against the manifest: every error names its
field, in the native API's error shape (errors.py)::

    {"user_id": 123, "item_ids": [1001, 1002], "context": {"device": "mobile"},
     "top_k": 10}

``model_version`` may appear too: the route reads it (validation.body_version).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from modelgate.errors import FieldError, InvalidInput
from modelgate.inference.manifest import FeatureKind, FeatureSpec, RankingSpec
from modelgate.inference.validation import type_name

MAX_ID = 2**63 - 1  # ids are int64 everywhere they are stored or logged
FIELDS = ("user_id", "item_ids", "context", "top_k", "model_version")


@dataclass(frozen=True)
class RankRequest:
    user_id: int
    item_ids: tuple[int, ...]
    # Every context feature of the manifest: the request's value or the default.
    context: dict[str, float | str]
    top_k: int  # 1..len(item_ids): a larger top_k asks for every item


def _id_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a non-negative integer, got {type_name(value)}"
    if value < 0:
        return f"must be a non-negative integer, got {value}"
    if value > MAX_ID:
        return f"must be at most {MAX_ID}"
    return None


class RankRequestParser:
    """Compiled once per manifest; ``parse`` runs per request."""

    def __init__(self, spec: RankingSpec, max_items: int) -> None:
        self.max_items = max_items
        self.context = {f.name: f for f in spec.context}

    def parse(self, payload: Any) -> RankRequest:
        """A decoded JSON body → the request; raises ``InvalidInput`` naming each field."""
        if not isinstance(payload, dict):
            raise InvalidInput.for_fields(
                [FieldError("body", f"expected an object, got {type_name(payload)}")]
            )
        errors = [FieldError(k, "unknown field") for k in payload if k not in FIELDS]
        for key in ("user_id", "item_ids"):
            if key not in payload:
                errors.append(FieldError(key, "required field missing"))
        if "user_id" in payload and (problem := _id_problem(payload["user_id"])):
            errors.append(FieldError("user_id", problem))
        items = self._items(payload["item_ids"], errors) if "item_ids" in payload else ()
        context = self._context(payload.get("context", {}), errors)
        top_k = payload.get("top_k", self.max_items)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            errors.append(FieldError("top_k", f"must be a positive integer, got {top_k!r}"))
        if errors:
            raise InvalidInput.for_fields(errors)
        return RankRequest(payload["user_id"], items, context, min(top_k, len(items)))

    def _items(self, value: Any, errors: list[FieldError]) -> tuple[int, ...]:
        if not isinstance(value, list):
            errors.append(FieldError("item_ids", f"expected an array, got {type_name(value)}"))
            return ()
        if not 1 <= len(value) <= self.max_items:
            errors.append(
                FieldError("item_ids", f"expected 1 to {self.max_items} ids, got {len(value)}")
            )
            return ()
        first: dict[int, int] = {}
        for i, item in enumerate(value):
            if problem := _id_problem(item):
                errors.append(FieldError(f"item_ids[{i}]", problem))
            elif item in first:
                errors.append(
                    FieldError(f"item_ids[{i}]", f"duplicate of item_ids[{first[item]}] ({item})")
                )
            else:
                first[item] = i
        return tuple(value)

    def _context(self, value: Any, errors: list[FieldError]) -> dict[str, float | str]:
        if not isinstance(value, dict):
            errors.append(FieldError("context", f"expected an object, got {type_name(value)}"))
            return {}
        known = ", ".join(self.context) or "none"
        out: dict[str, float | str] = {}
        for key in value:
            if key not in self.context:
                errors.append(
                    FieldError(f"context.{key}", f"unknown context feature (known: {known})")
                )
        for name, feature in self.context.items():
            where = f"context.{name}"
            if name not in value:
                if feature.default is None:
                    errors.append(FieldError(where, "required context feature missing"))
                else:
                    out[name] = feature.default
                continue
            checked = _check(feature, value[name])
            if isinstance(checked, FieldError):
                errors.append(FieldError(where, checked.reason))
            else:
                out[name] = checked
        return out


def _check(feature: FeatureSpec, value: Any) -> float | str | FieldError:
    if feature.kind is FeatureKind.CATEGORICAL:
        if isinstance(value, str) and value in feature.values:
            return value
        allowed = ", ".join(feature.values)
        return FieldError("", f"must be one of {allowed}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return FieldError("", f"must be a number, got {type_name(value)}")
    if not math.isfinite(value):
        return FieldError("", f"must be a finite number, got {value}")
    if feature.min is not None and value < feature.min:
        return FieldError("", f"must be >= {feature.min:g} (got {value})")
    if feature.max is not None and value > feature.max:
        return FieldError("", f"must be <= {feature.max:g} (got {value})")
    return float(value)
