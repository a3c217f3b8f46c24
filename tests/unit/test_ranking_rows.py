"""Row assembly (one-hot, index, defaults for unknown ids and bad stored values) and
the ordering of scores."""

from __future__ import annotations

import numpy as np
import pytest

from modelgate.inference.manifest import Manifest
from modelgate.ranking.ranker import order
from modelgate.ranking.rows import ColumnsMissing, RowAssembler
from tests.unit.ranking_spec import ranker_manifest


@pytest.fixture
def rows() -> RowAssembler:
    spec = Manifest.model_validate(ranker_manifest()).ranking
    assert spec is not None
    return RowAssembler(spec)


def f32(values: object) -> np.ndarray:
    return np.array(values, np.float32)


CONTEXT: dict[str, float | str] = {"hour_of_day": 14.0, "device": "desktop", "boost": 1.5}


def test_rows_are_user_then_item_then_context(rows: RowAssembler) -> None:
    user = np.array([[0.3, 2]], np.float32)  # ctr, segment "c"
    items = np.array([[7, 1], [9, 0]], np.float32)  # popularity, genre index
    out = rows.assemble(user, True, items, np.array([True, True]), CONTEXT)
    assert out.dtype == np.float32 and out.shape == (2, rows.width) == (2, 10)
    expected = np.array(
        [
            [0.3, 0, 0, 1, 7, 1, 14, 0, 1, 1.5],
            [0.3, 0, 0, 1, 9, 0, 14, 0, 1, 1.5],
        ],
        np.float32,
    )
    np.testing.assert_array_equal(out, expected)


def test_unknown_ids_take_every_default(rows: RowAssembler) -> None:
    user = np.zeros((1, 2), np.float32)
    items = np.array([[7, 1], [0, 0]], np.float32)
    out = rows.assemble(user, False, items, np.array([True, False]), CONTEXT)
    # user defaults: ctr 0.1, segment "b"; item defaults: popularity 5, genre "news" (0)
    np.testing.assert_array_equal(out[:, :4], f32([[0.1, 0, 1, 0]] * 2))
    np.testing.assert_array_equal(out[:, 4:6], [[7, 1], [5, 0]])


def test_a_bad_stored_value_takes_its_features_default(rows: RowAssembler) -> None:
    user = np.array([[np.nan, 7]], np.float32)  # NaN ctr, segment index out of range
    items = np.array([[np.inf, 0.5], [3, -1]], np.float32)  # inf, non-integer, negative
    out = rows.assemble(user, True, items, np.array([True, True]), CONTEXT)
    np.testing.assert_array_equal(out[0, :4], f32([0.1, 0, 1, 0]))
    np.testing.assert_array_equal(out[:, 4:6], [[5, 0], [3, 0]])


def test_one_hot_is_exactly_one_column(rows: RowAssembler) -> None:
    user = np.array([[0.5, 0]], np.float32)
    items = np.ones((3, 2), np.float32)
    for device, hot in (("mobile", [1, 0]), ("desktop", [0, 1])):
        out = rows.assemble(user, True, items, np.ones(3, bool), {**CONTEXT, "device": device})
        np.testing.assert_array_equal(out[:, 7:9], [hot] * 3)
        np.testing.assert_array_equal(out[:, 1:4], [[1, 0, 0]] * 3)


def test_stored_columns_are_picked_by_name(rows: RowAssembler) -> None:
    # A feature set may hold more columns, in another order, than the model reads.
    stored = ("genre", "extra", "popularity")
    np.testing.assert_array_equal(rows.item.pick(stored), [2, 0])
    with pytest.raises(ColumnsMissing, match="popularity"):
        rows.item.pick(("genre",))


def test_order_is_score_descending_ties_in_request_order() -> None:
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.2, np.nan, 0.7], np.float32)
    assert order(scores, 7).tolist() == [1, 3, 6, 2, 0, 4, 5]
    assert order(scores, 2).tolist() == [1, 3]
    assert order(np.zeros(4, np.float32), 4).tolist() == [0, 1, 2, 3]
