"""Rows for the drift tests: churn's training distribution, as batch-request instances.

Traffic goes to churn version 1 by its TF-Serving route, which the other stack tests
leave alone but for a few rows (test_drift.py and test_dashboards.py send it)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from scripts.build_models import CHURN_INPUTS, synthetic_churn
from tests.conftest import wait_until
from tests.stack.conftest import Stack

CHURN_V1_BATCH = "/v1/models/churn/versions/1:predict"  # used by no other stack test
MAX_ROWS = 1000  # Settings.max_batch_instances: rows in one batch request


def training_rows(n: int, seed: int) -> np.ndarray:
    """``n`` rows from the distribution churn was trained on (another sample of it)."""
    rows, _ = synthetic_churn(n, np.random.default_rng(seed))
    return rows


def as_instances(rows: np.ndarray) -> list[dict[str, Any]]:
    """Rows as named instances, each value of its input's JSON type."""
    out = []
    for row in rows.tolist():
        instance: dict[str, Any] = {}
        for spec, value in zip(CHURN_INPUTS, row, strict=True):
            dtype = spec["dtype"]
            instance[spec["name"]] = (
                bool(value) if dtype == "bool" else int(value) if dtype == "int" else value
            )
        out.append(instance)
    return out


def counters_scraped(stack: Stack) -> None:
    """Wait until Prometheus has scraped churn v1's bin counters from every replica, at
    0 or more: rows counted before a counter's first scrape are not in its increase()
    (its first sample is already past them), so a fresh stack must be scraped first."""
    expr = 'count(modelgate_feature_bin_total{model="churn", version="1", feature="age", bin="0"})'

    def scraped() -> bool:
        r = httpx.get(f"{stack.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        result = r.json()["data"]["result"]
        return bool(result) and int(result[0]["value"][1]) >= len(stack.replicas)

    wait_until(scraped, 60, "churn v1's bin counters scraped from every replica")
