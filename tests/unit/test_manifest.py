"""Manifest parsing: what a valid model.json is, and what is refused with a reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from modelgate.inference.manifest import DType, Manifest, Task, read_manifest
from tests.unit.manifests import manifest_dict


def test_valid_manifest_parses_with_types_and_free_metadata() -> None:
    m = Manifest.model_validate(manifest_dict())
    assert m.task is Task.BINARY
    assert m.input_names == ["age", "income", "is_premium"]
    assert m.inputs[0].dtype is DType.INT and m.inputs[0].max == 100
    assert m.metadata["training"]["accuracy"] == 0.9
    assert (m.int_columns, m.bool_columns) == ((0,), (2,))  # age; is_premium
    assert m.model_dump()["inputs"][0]["name"] == "age"  # worked-out columns aren't fields
    assert "int_columns" not in m.model_dump()


def test_example_features_stay_within_bounds_and_types() -> None:
    example = Manifest.model_validate(manifest_dict()).example_features()
    assert example == {"age": 59, "income": 0.0, "is_premium": False}


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"outputs": {"classes": ["a", "b", "c"]}}, "exactly two classes"),
        ({"task": "multiclass_classification", "outputs": {"classes": ["a"]}}, "at least two"),
        ({"task": "regression"}, "no classes"),
        ({"sha256": "xyz"}, "sha256"),
        ({"version": "v2"}, "version"),
        ({"format": "pickle"}, "format"),
        ({"inputs": []}, "inputs"),
        ({"inputs": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"inputs": [{"name": "a", "min": 5, "max": 1}]}, "min 5.0 > max 1.0"),
        ({"file": "../../etc/passwd"}, "file"),
        ({"name": "Bad Name"}, "model name"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_manifests_are_refused_with_a_reason(
    overrides: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ValidationError) as info:
        Manifest.model_validate(manifest_dict(**overrides))
    assert needle in str(info.value)


def test_read_manifest_checks_directory_name_and_version(tmp_path: Path) -> None:
    version_dir = tmp_path / "churn" / "3"
    version_dir.mkdir(parents=True)
    (version_dir / "model.json").write_text(json.dumps(manifest_dict()))
    assert read_manifest(version_dir).version == "3"

    other = tmp_path / "churn" / "4"
    other.mkdir()
    (other / "model.json").write_text(json.dumps(manifest_dict()))
    with pytest.raises(ValueError, match="manifest version '3' != directory '4'"):
        read_manifest(other)
