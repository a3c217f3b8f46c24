"""The standard protocols through the gateway, with the real tritonclient."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.conftest import wait_until
from tests.stack.conftest import ADMIN_KEY, Stack

pytestmark = pytest.mark.stack

CHURN = [35, 75000, 680, 24, 730, 85.5, 2, 0, 2, 3]


def fleet_versions(stack: Stack) -> list[str]:
    body = httpx.get(f"{stack.gateway}/models/churn").json()
    return [w["default_version"] for w in body["fleet"]]


def test_tritonclient_through_the_gateway(stack: Stack) -> None:
    client = httpclient.InferenceServerClient(url=stack.gateway.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready("churn")
    rows = np.array([CHURN], dtype=np.float32)
    tensor = httpclient.InferInput("input", [1, 10], "FP32")
    tensor.set_data_from_numpy(rows, binary_data=True)
    result = client.infer("churn", [tensor], headers={"X-Request-ID": "triton-through-nginx"})
    native = httpx.post(f"{stack.gateway}/predict", json={"features": [*CHURN[:7], False, 2, 3]})
    assert result.as_numpy("probability").tolist() == pytest.approx(
        [native.json()["probability"]], abs=1e-7
    )
    assert stack.upstream_of("triton-through-nginx")  # it went through nginx to a replica

    v1 = httpx.post(
        f"{stack.gateway}/v1/models/churn:predict",
        json={"instances": [[*CHURN[:7], False, 2, 3]]},
    )
    assert v1.json()["predictions"][0]["probability"] == native.json()["probability"]


def test_v2_repository_load_is_fleet_wide_and_admin_only(stack: Stack) -> None:
    client = httpclient.InferenceServerClient(url=stack.gateway.removeprefix("http://"))
    admin = {"X-API-Key": ADMIN_KEY}
    with pytest.raises(Exception, match="admin key is required"):
        client.load_model("churn", config=None)
    # Issue 18: the index is an admin route too.
    with pytest.raises(Exception, match="admin key is required"):
        client.get_model_repository_index()
    index = {
        (m["name"], m["version"]): m["state"]
        for m in client.get_model_repository_index(headers=admin)
    }
    assert index[("churn", "1")] == index[("churn", "2")] == "READY"
    try:
        r = httpx.post(
            f"{stack.gateway}/v2/repository/models/churn/load",
            json={"parameters": {"version": "1"}},
            headers=admin,
        )
        assert r.status_code == 200, r.text
        wait_until(lambda: fleet_versions(stack) == ["1"] * 6, 15, "fleet on v1 via V2")
        assert client.get_model_metadata("churn")["platform"] == "pytorch_libtorch"
    finally:
        client.load_model("churn", headers=admin)  # no version: the highest on disk
        wait_until(lambda: fleet_versions(stack) == ["2"] * 6, 15, "fleet back on v2")


def test_rank_routes_through_the_gateway(stack: Stack) -> None:
    """The demo ranker answers /rank through nginx from the first request: `stack up`
    loaded its shipped feature files into Redis before the replicas started."""
    unknown = 10**9
    context = {"hour_of_day": 20, "day_of_week": 5, "device": "mobile"}
    body = {"user_id": 1, "item_ids": [1, 2, unknown], "context": context}
    r = httpx.post(f"{stack.gateway}/rank", json=body, headers={"X-Request-ID": "rank-via-nginx"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["model_name"], answer["request_id"]) == ("feed", "rank-via-nginx")
    assert stack.upstream_of("rank-via-nginx")
    # Known ids found in the store, the unknown one on its defaults.
    assert answer["defaults_used"] == {"user": False, "items": [unknown]}
    assert [p["rank"] for p in answer["predictions"]] == [1, 2, 3]
    scores = [p["score"] for p in answer["predictions"]]
    assert scores == sorted(scores, reverse=True)
    r = httpx.post(f"{stack.gateway}/models/churn/rank", json=body)
    assert r.status_code == 422 and r.json()["field"] == "model", r.text
    # The ranker doesn't take /predict over: the default predictor is still churn.
    r = httpx.post(f"{stack.gateway}/predict", json={"features": CHURN})
    assert r.status_code == 200 and r.json()["model_name"] == "churn", r.text
