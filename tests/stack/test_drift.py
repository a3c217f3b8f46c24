"""Input drift through the whole stack: rows drawn from churn's training distribution
score no drift in Prometheus; shifted rows then score high on the shifted inputs only,
the alert's condition holds (it is pending: its ``for:`` timing is proven by promtool,
infra/prometheus/tests/drift_test.yml), and the fleet's /stats shows the scores.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from scripts.build_models import CHURN_INPUTS
from tests.conftest import wait_until
from tests.stack.conftest import Stack
from tests.stack.drift_traffic import (
    CHURN_V1_BATCH,
    MAX_ROWS,
    as_instances,
    counters_scraped,
    training_rows,
)
from tests.stack.test_dashboards import query, scalar

pytestmark = pytest.mark.stack

SHIFTED = ("age", "income")
LIVE = 'model="churn", version="1"'


def counted(stack: Stack) -> float:
    """Rows of churn v1 Prometheus has seen counted (each row once per input: age's)."""
    return scalar(stack, f'sum(modelgate_feature_bin_total{{{LIVE}, feature="age"}})') or 0.0


def send_rows(stack: Stack, rows: np.ndarray, source_ip: str) -> None:
    """Predict ``rows`` with churn v1 in batch requests, and wait until Prometheus has
    scraped their counts and evaluated the drift rules over them."""
    counters_scraped(stack)
    before = counted(stack)
    with stack.client(source_ip) as c:
        for start in range(0, len(rows), MAX_ROWS):
            body = {"instances": as_instances(rows[start : start + MAX_ROWS])}
            r = c.post(CHURN_V1_BATCH, json=body)
            assert r.status_code == 200, r.text
    wait_until(lambda: counted(stack) >= before + len(rows), 60, "drift counts scraped")
    seen = time.time()

    def evaluated() -> bool:
        stamps = query(stack, f"timestamp(modelgate_feature_drift_psi{{{LIVE}}})")
        return bool(stamps) and all(float(s["value"][1]) > seen for s in stamps)

    wait_until(evaluated, 60, "drift rules evaluated over the new counts")


def scores(stack: Stack) -> dict[str, float]:
    return {
        s["metric"]["feature"]: float(s["value"][1])
        for s in query(stack, f"modelgate_feature_drift_psi{{{LIVE}}}")
    }


def test_training_traffic_scores_no_drift_and_shifted_traffic_fires_the_alert(
    stack: Stack,
) -> None:
    send_rows(stack, training_rows(2000, seed=7), "127.0.0.41")
    quiet = scores(stack)
    assert set(quiet) == {spec["name"] for spec in CHURN_INPUTS}
    assert max(quiet.values()) < 0.1, quiet  # "no drift" by the usual reading
    alerts = 'ALERTS{alertname="ModelgateFeatureDrift", model="churn", version="1"}'
    assert query(stack, alerts) == []

    # Older customers, richer ones: far past the training data's top bins. The rest of
    # each row stays as in training.
    shifted = training_rows(3000, seed=8)
    shifted[:, 0] = np.random.default_rng(9).integers(85, 100, len(shifted))
    shifted[:, 1] *= 4
    send_rows(stack, shifted, "127.0.0.42")
    drifted = scores(stack)
    assert all(drifted[f] > 0.25 for f in SHIFTED), drifted  # major drift
    assert all(v < 0.1 for f, v in drifted.items() if f not in SHIFTED), drifted

    def alerting() -> set[str]:
        return {a["metric"]["feature"] for a in query(stack, alerts)}

    wait_until(lambda: alerting() == set(SHIFTED), 30, "the drift alert pending")

    with stack.client("127.0.0.43") as c:
        fleet = c.get("/stats").json()
    churn_v1 = fleet["feature_drift_psi"]["churn"]["1"]
    assert churn_v1["age"] > 0.25 and churn_v1["region"] < 0.1
