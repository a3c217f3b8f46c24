"""The matrix form on a single route is counted by the batch quota (issue 24): many rows
must not ride on the cheaper single-prediction quota."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modelgate.app import create_app
from modelgate.settings import RateLimitSettings, Settings

ROW = [35, 75000, 680, 24, 730, 85.5, 2, False, 2, 3]


@pytest.fixture
def client(demo_models: Path) -> Iterator[TestClient]:
    quotas = RateLimitSettings(enabled=True, predict="100/minute", batch="1/minute")
    with TestClient(create_app(Settings(model_repository=demo_models, rate_limit=quotas))) as c:
        yield c


def test_a_matrix_spends_the_batch_quota(client: TestClient) -> None:
    first = client.post("/predict", json={"features": [ROW, ROW]})
    assert first.status_code == 200, first.text
    assert first.json()["batch_size"] == 2
    assert first.headers["x-ratelimit-limit"] == "1"  # the batch quota's headers
    again = client.post("/predict", json={"features": [ROW, ROW]})
    assert again.status_code == 429
    assert client.post("/predict/batch", json={"instances": [ROW]}).status_code == 429
    # One row is still a single prediction, on its own quota.
    single = client.post("/predict", json={"features": ROW})
    assert single.status_code == 200 and single.headers["x-ratelimit-limit"] == "100"
