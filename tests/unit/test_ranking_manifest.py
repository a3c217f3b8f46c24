"""Manifest task ``ranking``: columns derived from the ranking section, checks on it, and
the other tasks unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from modelgate.inference.manifest import Manifest, Task
from tests.unit.manifests import manifest_dict
from tests.unit.ranking_spec import ranker_manifest, ranking_section

COLUMNS = [
    "user__ctr",
    "user__segment__a",
    "user__segment__b",
    "user__segment__c",
    "item__popularity",
    "item__genre",
    "context__hour_of_day",
    "context__device__mobile",
    "context__device__desktop",
    "context__boost",
]


def test_inputs_follow_the_ranking_section_in_row_order() -> None:
    m = Manifest.model_validate(ranker_manifest())
    assert m.task is Task.RANKING
    assert m.input_names == COLUMNS
    by_name = {i.name: i for i in m.inputs}
    assert (by_name["user__ctr"].min, by_name["user__ctr"].max) == (0, 1)
    assert (by_name["item__genre"].min, by_name["item__genre"].max) == (0, 1)  # an index


def test_written_inputs_must_be_the_derived_ones() -> None:
    derived = Manifest.model_validate(ranker_manifest())
    written = [i.model_dump() for i in derived.inputs]
    assert Manifest.model_validate(ranker_manifest(inputs=written)).inputs == derived.inputs
    with pytest.raises(ValidationError, match="ranking section's columns"):
        Manifest.model_validate(ranker_manifest(inputs=written[::-1]))


def test_round_trip_through_json() -> None:
    m = Manifest.model_validate(ranker_manifest())
    again = Manifest.model_validate_json(m.model_dump_json())
    assert again == m and again.digest == m.digest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": "regression", "inputs": [{"name": "x"}]}, "goes with task ranking"),
        ({"ranking": None}, "task ranking needs a ranking section"),
        ({"outputs": {"classes": ["a", "b"]}}, "ranking model has no classes"),
        (
            {"ranking": ranking_section(user=[{"name": "ctr", "min": 0, "max": 1}])},
            "cold-start default",
        ),
        (
            {"ranking": ranking_section(item=[{"name": "x", "default": 1}] * 2)},
            "names must be unique",
        ),
        (
            {
                "ranking": ranking_section(
                    context=[{"name": "d", "kind": "categorical", "values": ["a"]}]
                )
            },
            "at least two distinct values",
        ),
        (
            {
                "ranking": ranking_section(
                    context=[
                        {"name": "d", "kind": "categorical", "values": ["a", "b"], "default": "z"}
                    ]
                )
            },
            "default must be one of its values",
        ),
        (
            {"ranking": ranking_section(user=[{"name": "x", "min": 0, "max": 1, "default": 3}])},
            "default outside",
        ),
        ({"ranking": ranking_section(feature_set="Bad Name")}, "feature_set"),
    ],
)
def test_bad_ranking_sections_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Manifest.model_validate(ranker_manifest(**change))


def test_other_tasks_take_no_ranking_section() -> None:
    assert Manifest.model_validate(manifest_dict()).ranking is None
    with pytest.raises(ValidationError, match="ranking section goes with task ranking"):
        Manifest.model_validate(manifest_dict(ranking=ranking_section()))


def test_demo_ranker_manifest(demo_models: Any) -> None:
    from modelgate.inference.manifest import read_manifest

    m = read_manifest(demo_models / "feed" / "1")
    assert m.task is Task.RANKING and m.ranking is not None
    assert len(m.inputs) == 13  # 4 user + 4 item + hour + day + 3 device columns
    training = m.metadata["training"]
    assert training["heldout_auc"] > training["baseline_popularity_auc"]
