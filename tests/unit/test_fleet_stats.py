"""``/stats`` when the fleet's numbers can't be had: a clear 503, and this replica's own
summary still at ``/stats/replica``. (The fleet summary itself is proven against the
stack's real Prometheus in tests/stack/test_fleet_stats.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from modelgate.app import create_app
from modelgate.settings import Settings, StatsSettings
from tests.ports import free_port


def test_no_prometheus_answering_is_a_503_and_the_replica_view_stays(demo_models: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = Settings(
        model_repository=demo_models,
        models=["iris"],  # one model to load: the quickest app
        stats=StatsSettings(prometheus_url=nobody, timeout_seconds=1),
    )
    with TestClient(create_app(settings)) as client:
        fleet = client.get("/stats", headers={"X-Request-ID": "rid-stats"})
        own = client.get("/stats/replica")
    assert fleet.status_code == 503
    body = fleet.json()
    assert body["error"] == "unavailable" and body["request_id"] == "rid-stats"
    assert "Prometheus did not answer" in body["message"]
    assert own.status_code == 200
    assert own.json()["scope"] == "replica" and own.json()["instance"] == settings.instance


@pytest.mark.parametrize("url", ["prometheus:9090", "ftp://prometheus:9090", "http://"])
def test_the_prometheus_url_must_be_http(url: str) -> None:
    with pytest.raises(ValidationError, match="is not a URL like"):
        StatsSettings(prometheus_url=url)
