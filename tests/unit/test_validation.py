"""Input validation derived from the manifest: every bad field named with its reason."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from modelgate.errors import InvalidInput, MalformedRequest
from modelgate.inference.manifest import Manifest
from modelgate.inference.validation import (
    InputValidator,
    body_version,
    parse_json,
    refuse_unknown_keys,
)
from tests.unit.manifests import manifest_dict

MANIFEST = Manifest.model_validate(manifest_dict())
V = InputValidator(MANIFEST)
GOOD = {"age": 35, "income": 75000.5, "is_premium": True}


def errors_of(payload: Any, batch: bool = False) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInput) as info:
        V.batch(payload, 3) if batch else V.single(payload)
    return [(e.field, e.reason) for e in info.value.errors]


def test_named_and_positional_features_give_the_same_row() -> None:
    named = V.single({"features": GOOD})
    positional = V.single({"features": [35, 75000.5, True]})
    assert named.dtype == np.float32 and named.shape == (1, 3)
    np.testing.assert_array_equal(named, positional)
    np.testing.assert_array_equal(named[0], np.array([35, 75000.5, 1], dtype=np.float32))


def test_canonical_rows_ignore_key_order_and_int_vs_float() -> None:
    a = V.single({"features": {"is_premium": 1, "income": 75000.5, "age": 35.0}})
    b = V.single({"features": GOOD})
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        ({**GOOD, "age": "35"}, ("features.age", "expected an integer, got string")),
        ({**GOOD, "age": True}, ("features.age", "expected an integer, got boolean")),
        ({**GOOD, "age": 35.5}, ("features.age", "expected an integer, got 35.5")),
        ({**GOOD, "age": 17}, ("features.age", "must be >= 18 (got 17)")),
        ({**GOOD, "age": 101}, ("features.age", "must be <= 100 (got 101)")),
        ({**GOOD, "income": None}, ("features.income", "expected a number, got null")),
        ({**GOOD, "income": float("nan")}, ("features.income", "NaN is not allowed")),
        ({**GOOD, "income": float("inf")}, ("features.income", "Infinity is not allowed")),
        ({**GOOD, "income": -float("inf")}, ("features.income", "Infinity is not allowed")),
        ({**GOOD, "income": 10**400}, ("features.income", "number is too large")),
        ({**GOOD, "is_premium": 2}, ("features.is_premium", "expected a boolean, got number")),
        ({**GOOD, "colour": 1}, ("features.colour", "unknown feature")),
        ({"age": 35, "income": 1.0}, ("features.is_premium", "required feature missing")),
    ],
)
def test_each_bad_value_is_named_with_its_reason(
    features: dict[str, Any], expected: tuple[str, str]
) -> None:
    assert errors_of({"features": features}) == [expected]


def test_every_error_in_a_request_is_reported() -> None:
    errs = errors_of({"features": {"age": 5, "income": "x"}})
    assert [f for f, _ in errs] == ["features.age", "features.income", "features.is_premium"]


def test_positional_list_of_wrong_length_names_the_expected_order() -> None:
    [(field, reason)] = errors_of({"features": [1, 2]})
    assert field == "features"
    assert reason == "expected 3 values in the order age, income, is_premium; got 2"


def test_positional_bad_value_names_index_and_feature() -> None:
    assert errors_of({"features": [35, "x", True]}) == [
        ("features[1] (income)", "expected a number, got string")
    ]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ([1, 2], ("body", "expected an object with 'features', got array")),
        ({"feature": {}}, ("features", "required field missing")),
        (
            {"features": "x"},
            (
                "features",
                "expected an object of named features or an array of 3 values, got string",
            ),
        ),
    ],
)
def test_wrong_shape_of_body(payload: Any, expected: tuple[str, str]) -> None:
    assert errors_of(payload) == [expected]


def test_batch_rows_and_limits() -> None:
    rows = V.batch({"instances": [GOOD, [40, 1.0, False]]}, 3)
    assert rows.shape == (2, 3)
    assert errors_of({"instances": []}, batch=True) == [("instances", "must not be empty")]
    assert errors_of({"instances": [GOOD] * 4}, batch=True) == [
        ("instances", "at most 3 instances per request, got 4")
    ]
    assert errors_of({"instances": {"a": 1}}, batch=True) == [
        ("instances", "expected an array, got object")
    ]
    assert errors_of({"instances": [GOOD, {**GOOD, "age": 0}]}, batch=True) == [
        ("instances[1].age", "must be >= 18 (got 0)")
    ]


def test_parse_json_accepts_nan_for_validation_and_refuses_garbage() -> None:
    assert parse_json(b'{"a": 1}') == {"a": 1}
    assert np.isnan(parse_json(b'{"a": NaN}')["a"])
    for bad in (b"", b"{", b"{'a': 1}", b"\xff\xfe"):
        with pytest.raises(MalformedRequest):
            parse_json(bad)


# The bulk path (no boolean inputs): it must accept exactly what the per-value path
# accepts, give the same rows, and leave every refusal to it so the fields are named.
NUMERIC = InputValidator(
    Manifest.model_validate(
        manifest_dict(
            inputs=[
                {"name": "age", "dtype": "int", "min": 18, "max": 100},
                {"name": "income", "dtype": "float", "min": 0},
                {"name": "score", "dtype": "float"},
            ]
        )
    )
)


def per_value(instances: list[Any]) -> np.ndarray:
    errors: list[Any] = []
    rows = [NUMERIC.row(inst, f"instances[{i}]", errors) for i, inst in enumerate(instances)]
    assert not errors
    return np.array(rows, dtype=np.float32)


def test_bulk_rows_equal_per_value_rows() -> None:
    instances: list[Any] = [
        {"age": 35, "income": 75000.5, "score": -1.25},
        {"score": 3, "age": 99.0, "income": 0},  # any key order, ints as floats
        {"age": 18, "income": 1e12, "score": 0.1},
    ]
    assert NUMERIC._bulk(instances) is not None  # the bulk path answers these
    bulk = NUMERIC.batch({"instances": instances}, 10)
    assert bulk.dtype == np.float32 and bulk.tobytes() == per_value(instances).tobytes()
    positional = [[35, 75000.5, -1.25], [99.0, 0, 3], [18, 1e12, 0.1]]
    assert NUMERIC.batch({"instances": positional}, 10).tobytes() == bulk.tobytes()


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        ({"age": "35"}, "instances[1].age", "expected an integer, got string"),
        ({"age": True}, "instances[1].age", "expected an integer, got boolean"),
        ({"age": 35.5}, "instances[1].age", "expected an integer, got 35.5"),
        ({"age": 17}, "instances[1].age", "must be >= 18 (got 17)"),
        ({"income": -1}, "instances[1].income", "must be >= 0 (got -1)"),
        ({"score": None}, "instances[1].score", "expected a number, got null"),
        ({"score": [1]}, "instances[1].score", "expected a number, got array"),
        ({"score": 10**400}, "instances[1].score", "number is too large"),
        ({"extra": 1}, "instances[1].extra", "unknown feature"),
    ],
)
def test_bulk_leaves_every_refusal_to_the_per_value_path(
    bad: dict[str, Any], field: str, reason: str
) -> None:
    good = {"age": 35, "income": 1.0, "score": 2.0}
    instances = [good, {**good, **bad}, good]
    assert NUMERIC._bulk(instances) is None
    with pytest.raises(InvalidInput) as info:
        NUMERIC.batch({"instances": instances}, 10)
    assert [(e.field, e.reason) for e in info.value.errors] == [(field, reason)]


def test_bulk_refuses_ragged_or_mixed_instances() -> None:
    good = {"age": 35, "income": 1.0, "score": 2.0}
    for instances in ([good, {"age": 35, "income": 1.0}], [good, [35, 1.0, 2.0]], [[35, 1.0]]):
        assert NUMERIC._bulk(instances) is None
    with pytest.raises(InvalidInput) as info:
        NUMERIC.batch({"instances": [good, {"age": 35, "income": 1.0}]}, 10)
    assert info.value.errors[0].field == "instances[1].score"


# Typed decoding of whole bodies (``single_body`` / ``batch_body``): a fast path that must
# give the same rows as parsing then validating, and the same named errors when it can't.
WIDE = InputValidator(
    Manifest.model_validate(
        manifest_dict(
            inputs=[{"name": "age", "dtype": "int", "min": 18, "max": 100}]
            + [{"name": f"x_{i}", "dtype": "float", "max": 10} for i in range(40)]
            + [{"name": "class", "dtype": "bool"}]  # not a Python identifier
        )
    )
)
WIDE_GOOD = {"age": 40, **{f"x_{i}": i / 7 for i in range(40)}, "class": True}


def outcome(validator: InputValidator, body: bytes, batch: bool) -> Any:
    """The rows as bytes, or the named errors, or the malformed-body message."""
    try:
        rows = validator.batch_body(body, 3) if batch else validator.single_body(body)
    except InvalidInput as exc:
        return [(e.field, e.reason) for e in exc.errors]
    except MalformedRequest as exc:
        return str(exc)
    assert rows.dtype == np.float32
    return rows.tobytes()


def general(validator: InputValidator, body: bytes, batch: bool) -> Any:
    try:
        payload = parse_json(body)
        refuse_unknown_keys(payload, "instances" if batch else "features")
        rows = validator.batch(payload, 3) if batch else validator.single(payload)
    except InvalidInput as exc:
        return [(e.field, e.reason) for e in exc.errors]
    except MalformedRequest as exc:
        return str(exc)
    return rows.tobytes()


BODY_FEATURES: list[Any] = [
    GOOD,
    {"is_premium": 1, "income": 75000, "age": 35.0},
    {**GOOD, "is_premium": 0},
    {**GOOD, "is_premium": 1.0},
    {**GOOD, "is_premium": 2},
    {**GOOD, "age": "35"},
    {**GOOD, "age": True},
    {**GOOD, "age": 35.5},
    {**GOOD, "age": 17},
    {**GOOD, "income": -0.5},
    {**GOOD, "income": None},
    {**GOOD, "income": float("nan")},
    {**GOOD, "income": float("inf")},
    {**GOOD, "income": 10**400},
    {**GOOD, "income": [1]},
    {**GOOD, "colour": 1},
    {"age": 35, "income": 1.0},
    [35, 75000.5, True],
    "features",
]


@pytest.mark.parametrize("features", BODY_FEATURES)
def test_typed_single_body_answers_like_the_general_path(features: Any) -> None:
    body = json.dumps({"features": features}).encode()
    assert outcome(V, body, batch=False) == general(V, body, batch=False)


@pytest.mark.parametrize("features", BODY_FEATURES)
def test_typed_batch_body_answers_like_the_general_path(features: Any) -> None:
    body = json.dumps({"instances": [GOOD, features]}).encode()
    assert outcome(V, body, batch=True) == general(V, body, batch=True)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[]",
        b'{"features": {"age": 35, "age": 36, "income": 1, "is_premium": true}}',
        b'{"instances": []}',
        json.dumps({"instances": [GOOD] * 4}).encode(),
        json.dumps({"instances": GOOD}).encode(),
    ],
)
def test_typed_decoding_of_odd_bodies_answers_like_the_general_path(body: bytes) -> None:
    for batch in (False, True):
        assert outcome(V, body, batch) == general(V, body, batch)


@pytest.mark.parametrize(
    "features",
    [
        WIDE_GOOD,
        {**WIDE_GOOD, "x_3": 10.5},
        {**WIDE_GOOD, "age": 40.5},
        {**WIDE_GOOD, "x_9": None},
        {**WIDE_GOOD, "class": 3},
    ],
)
def test_typed_decoding_of_many_features_answers_like_the_general_path(features: Any) -> None:
    for body, batch in (
        (json.dumps({"features": features}).encode(), False),
        (json.dumps({"instances": [WIDE_GOOD, features]}).encode(), True),
    ):
        assert outcome(WIDE, body, batch) == general(WIDE, body, batch)


def test_typed_decoding_answers_the_common_bodies_itself() -> None:
    """The fast path is taken for well-formed named features, not silently skipped."""
    single = json.dumps({"features": GOOD}).encode()
    batch = json.dumps({"instances": [GOOD, GOOD]}).encode()
    assert V._typed.single(single) is not None
    assert V._typed.batch(batch, 3) is not None
    assert WIDE._typed.single(json.dumps({"features": WIDE_GOOD}).encode()) is not None


# Strict bodies (issue 24): nothing a caller sends is silently ignored.


@pytest.mark.parametrize(
    ("body", "batch", "field", "hint"),
    [
        ({"features": GOOD, "context": {"user": 7}}, False, "context", "remove it"),
        ({"features": GOOD, "extra": 1}, False, "extra", "unknown field"),
        ({"instances": [GOOD]}, False, "instances", "/predict/batch"),
        ({"inputs": [GOOD]}, False, "inputs", "/v2/models/{name}/infer"),
        ({"instances": [GOOD], "features": GOOD}, True, "features", "'instances'"),
        ({"instances": [GOOD], "model_name": "churn"}, True, "model_name", "in the path"),
    ],
)
def test_unknown_top_level_keys_are_named_with_what_to_send(
    body: dict[str, Any], batch: bool, field: str, hint: str
) -> None:
    raw = json.dumps(body).encode()
    with pytest.raises(InvalidInput) as info:
        V.batch_body(raw, 3) if batch else V.single_body(raw)
    [error] = info.value.errors
    assert error.field == field and error.reason.startswith("unknown field")
    assert hint in error.reason


def test_every_unknown_key_is_named_at_once() -> None:
    raw = json.dumps({"features": GOOD, "a": 1, "b": 2}).encode()
    with pytest.raises(InvalidInput) as info:
        V.single_body(raw)
    assert [e.field for e in info.value.errors] == ["a", "b"]


def test_model_version_in_the_body_picks_the_version_or_says_why_not() -> None:
    def body(version: Any) -> bytes:
        return json.dumps({"features": GOOD, "model_version": version}).encode()

    assert body_version(json.dumps({"features": GOOD}).encode(), None) is None
    assert body_version(json.dumps({"features": GOOD}).encode(), "2") == "2"
    assert body_version(body("1"), None) == "1"
    assert body_version(body(1), None) == "1"
    assert body_version(body("1"), "1") == "1"
    for bad, reason in [("01", "version number"), (True, "version number"), ("2", "contradicts")]:
        with pytest.raises(InvalidInput) as info:
            body_version(body(bad), "1")
        [error] = info.value.errors
        assert error.field == "model_version" and reason in error.reason
    # The key is the route's: the validator accepts a body that carries it.
    assert V.single_body(body("1")).shape == (1, 3)
