"""Input drift: the reference bins, the counting of served rows, the PSI against a hand
computation, the manifest's ``reference`` checks, and a replica's own scores."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from modelgate.app import create_app
from modelgate.inference.importer import ImportError_, ImportInput, ImportSpec, read_reference
from modelgate.inference.manifest import Manifest, Task
from modelgate.observability.drift import (
    BROADCAST_ROWS,
    MIN_ROWS,
    InputHistogram,
    bin_index,
    psi,
    reference_from_rows,
    reference_of,
    replica_scores,
)
from modelgate.observability.metrics import Metrics
from modelgate.settings import DriftSettings, Settings
from tests.unit.manifests import manifest_dict

REF = {"edges": [30.0, 50.0], "shares": [0.5, 0.3, 0.2]}


def manifest_with(reference: object) -> Manifest:
    return Manifest.model_validate(manifest_dict(reference=reference))


def test_quantile_bins_hold_equal_shares_and_a_few_values_get_a_bin_each() -> None:
    rng = np.random.default_rng(1)
    continuous = reference_of(rng.normal(size=5000).astype(np.float32))
    assert len(continuous.shares) == 10
    assert all(abs(s - 0.1) < 0.002 for s in continuous.shares)
    codes = reference_of(np.array([0, 0, 1, 2, 2, 2, 4], dtype=np.float32))
    assert codes.edges == [0.5, 1.5, 3.0]  # halfway between the values seen
    assert codes.shares == pytest.approx([2 / 7, 1 / 7, 3 / 7, 1 / 7], abs=1e-6)
    # Every training value in the bin the served value would land in: the same function.
    values = rng.integers(0, 100, 2000).astype(np.float32)
    ref = reference_of(values)
    counts = np.bincount(bin_index(values, ref.edges), minlength=len(ref.shares))
    assert counts / len(values) == pytest.approx(ref.shares, abs=1e-6)
    assert math.fsum(ref.shares) == pytest.approx(1, abs=1e-9)


def test_a_constant_column_is_one_bin() -> None:
    ref = reference_of(np.full(50, 3.0, dtype=np.float32))
    assert ref.edges == [] and ref.shares == [1.0]


@pytest.mark.parametrize("rows", [1, BROADCAST_ROWS, BROADCAST_ROWS + 1, 1000])
def test_counting_a_batch_agrees_with_binning_each_input(rows: int) -> None:
    rng = np.random.default_rng(rows)
    train = np.stack(
        [rng.integers(18, 80, 3000), rng.lognormal(11, 0.5, 3000), rng.random(3000) < 0.3],
        axis=1,
    ).astype(np.float32)
    reference = reference_from_rows(train, ["age", "income", "is_premium"], "test")
    histogram = InputHistogram(manifest_with(reference.model_dump()))
    served = train[rng.integers(0, 3000, rows)] * np.float32(1.1)
    expected = np.concatenate(
        [
            np.bincount(bin_index(served[:, i], spec.edges), minlength=len(spec.shares))
            for i, spec in enumerate(reference.features.values())
        ]
    )
    counts = histogram.count(served)
    assert counts.tolist() == expected.tolist()
    assert counts.sum() == rows * 3


def test_only_the_referenced_inputs_are_counted_in_input_order() -> None:
    reference = {"rows": 10, "features": {"is_premium": {"edges": [0.5], "shares": [0.5, 0.5]}}}
    histogram = InputHistogram(manifest_with(reference))
    assert [f.feature for f in histogram.features] == ["is_premium"]
    rows = np.array([[30, 1000, 1], [40, 2000, 0], [50, 3000, 1]], dtype=np.float32)
    assert histogram.count(rows).tolist() == [1, 2]


def test_psi_matches_a_hand_computation() -> None:
    # Served 20/30/50 % against a reference of 50/30/20 %:
    # (0.2-0.5)·ln(0.2/0.5) + 0 + (0.5-0.2)·ln(0.5/0.2) = 0.6·ln 2.5
    assert psi([0.5, 0.3, 0.2], [40, 60, 100]) == pytest.approx(0.6 * math.log(2.5), rel=1e-12)
    assert psi([0.5, 0.3, 0.2], [100, 60, 40]) == pytest.approx(0.0, abs=1e-12)
    # An empty bin counts as 1e-4 (finite); the infra rule test has the same number.
    empty = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.2 * math.log(0.5 / 0.3)
    empty += 0.3 * math.log(0.5 / 0.2)
    assert psi([0.5, 0.3, 0.2], [0, 100, 100]) == pytest.approx(empty, rel=1e-12)
    assert psi([0.5, 0.3, 0.2], [MIN_ROWS - 1, 0, 0]) is None  # too few rows to say


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({"edges": [50.0, 30.0], "shares": [0.5, 0.3, 0.2]}, "strictly increasing"),
        ({"edges": [30.0, 30.0], "shares": [0.5, 0.3, 0.2]}, "strictly increasing"),
        ({"edges": [30.0, 50.0], "shares": [0.5, 0.3, 0.3]}, "shares must sum to 1"),
        ({"edges": [30.0, 50.0], "shares": [0.5, 0.5]}, "2 edges make 3 bins"),
        ({"edges": [30.0, 50.0], "shares": [1.5, -0.3, -0.2]}, "between 0 and 1"),
        ({"edges": [30.0, float("inf")], "shares": [0.5, 0.3, 0.2]}, "finite"),
    ],
)
def test_a_bad_reference_is_refused_naming_the_problem(
    reference: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        manifest_with({"rows": 10, "features": {"age": reference}})
    assert "reference" in str(info.value)  # the error names where


def test_a_reference_for_no_input_of_the_model_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"\['height'\] are not inputs"):
        manifest_with({"rows": 10, "features": {"height": REF}})


def test_a_manifest_without_a_reference_still_loads_and_is_not_counted() -> None:
    manifest = Manifest.model_validate(manifest_dict())
    assert manifest.reference is None
    with pytest.raises(ValueError, match="has no reference"):
        InputHistogram(manifest)


def test_a_replica_scores_its_own_counts() -> None:
    metrics = Metrics(CollectorRegistry())
    histogram = InputHistogram(manifest_with({"rows": 10, "features": {"age": REF}}))
    metrics.track_features("churn", "3", histogram.features)
    # Counters exist at 0 before any row (Prometheus's increase needs the start).
    text = generate_latest(metrics.registry).decode()
    series = 'modelgate_feature_bin_total{bin="2",feature="age",model="churn",version="3"}'
    assert f"{series} 0.0" in text
    assert replica_scores(metrics.registry.collect()) == {}  # no rows: no score
    ages = np.array([[20.0], [40.0], [60.0], [60.0], [60.0]] * 40, dtype=np.float32)
    rows = np.concatenate([ages, np.zeros((200, 2), np.float32)], axis=1)
    metrics.count_features("churn", "3", histogram, rows[:100])
    metrics.count_features("churn", "3", histogram, rows[100:])
    assert replica_scores(metrics.registry.collect()) == {}  # counted at the flush
    metrics.flush()
    scores = replica_scores(metrics.registry.collect())
    # 40/40/120 rows: 20/20/60 % against 50/30/20 %.
    expected = -0.3 * math.log(0.4) - 0.1 * math.log(2 / 3) + 0.4 * math.log(3)
    assert scores == {"churn": {"3": {"age": round(expected, 4)}}}


def test_served_rows_reach_the_counters_and_the_setting_turns_it_off(
    demo_models: Path,
) -> None:
    row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    for enabled in (True, False):
        settings = Settings(
            model_repository=demo_models, models=["iris"], drift=DriftSettings(enabled=enabled)
        )
        with TestClient(create_app(settings)) as client:
            body = {"instances": [list(row.values())] * MIN_ROWS}
            assert client.post("/models/iris/predict/batch", json=body).status_code == 200
            metrics = client.get("/metrics").text
            stats = client.get("/stats/replica").json()
        counted = [
            line
            for line in metrics.splitlines()
            if line.startswith("modelgate_feature_bin_total{") and not line.endswith(" 0.0")
        ]
        if enabled:
            assert len(counted) == 4  # one bin of each input: the same row every time
            assert all(line.endswith(f" {float(MIN_ROWS)}") for line in counted)
            # One value for every row: far from the training spread, in every input.
            assert set(stats["feature_drift_psi"]["iris"]["1"]) == set(row)
            assert min(stats["feature_drift_psi"]["iris"]["1"].values()) > 0.25
        else:
            assert counted == [] and "modelgate_feature_reference_share{" not in metrics
            assert stats["feature_drift_psi"] == {}


def test_import_reads_a_reference_from_a_csv_of_training_rows(tmp_path: Path) -> None:
    spec = ImportSpec(
        task=Task.REGRESSION,
        inputs=[ImportInput(name="age", dtype="int"), ImportInput(name="vip", dtype="bool")],
    )
    good = tmp_path / "train.csv"
    good.write_text("vip,age\n" + "".join(f"{i % 3 == 0},{20 + i}\n" for i in range(300)))
    reference = read_reference(good, spec)
    assert reference.rows == 300 and set(reference.features) == {"age", "vip"}
    assert reference.features["vip"].shares == pytest.approx([0.666667, 0.333333])
    bad_header = tmp_path / "header.csv"
    bad_header.write_text("age,height\n30,180\n")
    with pytest.raises(ImportError_, match="header must name inputs"):
        read_reference(bad_header, spec)
    bad_cell = tmp_path / "cell.csv"
    bad_cell.write_text("age\n30\nthirty\n")
    with pytest.raises(ImportError_, match=r"line 3: 'thirty' is not a number"):
        read_reference(bad_cell, spec)
