"""The rank request's validation: every refusal names its field, in the native shape."""

from __future__ import annotations

from typing import Any

import pytest

from modelgate.errors import InvalidInput
from modelgate.inference.manifest import Manifest
from modelgate.ranking.request import RankRequestParser
from tests.unit.ranking_spec import ranker_manifest

CONTEXT = {"hour_of_day": 14, "device": "mobile"}


@pytest.fixture
def parser() -> RankRequestParser:
    spec = Manifest.model_validate(ranker_manifest()).ranking
    assert spec is not None
    return RankRequestParser(spec, max_items=5)


def refused(parser: RankRequestParser, body: Any) -> dict[str, str]:
    with pytest.raises(InvalidInput) as info:
        parser.parse(body)
    assert info.value.status_code == 422
    return {e.field: e.reason for e in info.value.errors}


def test_a_valid_request(parser: RankRequestParser) -> None:
    r = parser.parse({"user_id": 0, "item_ids": [3, 1, 2], "context": CONTEXT, "top_k": 2})
    assert (r.user_id, r.item_ids, r.top_k) == (0, (3, 1, 2), 2)
    # The omitted "boost" takes its default; numbers become floats.
    assert r.context == {"hour_of_day": 14.0, "device": "mobile", "boost": 1.0}


def test_top_k_defaults_to_every_item_and_is_capped(parser: RankRequestParser) -> None:
    body = {"user_id": 1, "item_ids": [5, 6], "context": CONTEXT}
    assert parser.parse(body).top_k == 2
    assert parser.parse({**body, "top_k": 50}).top_k == 2
    assert parser.parse({**body, "model_version": "1"}).top_k == 2  # the route reads it


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ([1, 2], "body", "expected an object, got array"),
        ({"item_ids": [1], "context": CONTEXT}, "user_id", "required field missing"),
        ({"user_id": 1, "context": CONTEXT}, "item_ids", "required field missing"),
        ({"user_id": -1, "item_ids": [1]}, "user_id", "non-negative integer, got -1"),
        ({"user_id": "7", "item_ids": [1]}, "user_id", "got string"),
        ({"user_id": True, "item_ids": [1]}, "user_id", "got boolean"),
        ({"user_id": 1.5, "item_ids": [1]}, "user_id", "got number"),
        ({"user_id": 2**63, "item_ids": [1]}, "user_id", "at most"),
        ({"user_id": 1, "item_ids": []}, "item_ids", "expected 1 to 5 ids, got 0"),
        ({"user_id": 1, "item_ids": list(range(6))}, "item_ids", "expected 1 to 5 ids, got 6"),
        ({"user_id": 1, "item_ids": {"a": 1}}, "item_ids", "expected an array"),
        ({"user_id": 1, "item_ids": [4, 8, 4]}, "item_ids[2]", "duplicate of item_ids[0] (4)"),
        ({"user_id": 1, "item_ids": [4, None]}, "item_ids[1]", "got null"),
        ({"user_id": 1, "item_ids": [1], "top_k": 0}, "top_k", "positive integer"),
        ({"user_id": 1, "item_ids": [1], "user": 3}, "user", "unknown field"),
    ],
)
def test_bad_fields_are_named(
    parser: RankRequestParser, body: Any, field: str, reason: str
) -> None:
    if isinstance(body, dict) and "context" not in body and field != "body":
        body = {**body, "context": CONTEXT}
    errors = refused(parser, body)
    assert field in errors and reason in errors[field], errors


@pytest.mark.parametrize(
    ("context", "field", "reason"),
    [
        ({**CONTEXT, "weather": "rain"}, "context.weather", "unknown context feature (known:"),
        ({"device": "mobile"}, "context.hour_of_day", "required context feature missing"),
        ({**CONTEXT, "hour_of_day": 24}, "context.hour_of_day", "must be <= 23 (got 24)"),
        ({**CONTEXT, "hour_of_day": "14"}, "context.hour_of_day", "must be a number"),
        ({**CONTEXT, "hour_of_day": float("nan")}, "context.hour_of_day", "finite"),
        ({**CONTEXT, "device": "watch"}, "context.device", "must be one of mobile, desktop"),
        ({**CONTEXT, "device": 0}, "context.device", "must be one of"),
        ({**CONTEXT, "boost": -1}, "context.boost", "must be >= 0"),
    ],
)
def test_context_is_checked_against_the_manifest(
    parser: RankRequestParser, context: Any, field: str, reason: str
) -> None:
    errors = refused(parser, {"user_id": 1, "item_ids": [1], "context": context})
    assert reason in errors[field], errors


def test_every_error_is_reported_at_once(parser: RankRequestParser) -> None:
    with pytest.raises(InvalidInput) as info:
        parser.parse({"user_id": -3, "item_ids": [1, 1], "context": {"x": 1}})
    fields = [e.field for e in info.value.errors]
    assert fields[:3] == ["user_id", "item_ids[1]", "context.x"]
    assert info.value.message.startswith("user_id: must be a non-negative integer")
