"""Issue 18 through the gateway (nginx in front of three replicas): bad input is a 4xx
with a JSON body, no redirect points at a client-supplied Host, nothing is a 5xx."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.test_api import CHURN
from tests.stack.conftest import ADMIN_KEY, Stack

EVIL = "evil.example"
ROW = list(CHURN.values())
V2_STRINGS = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": ROW}]}
V2_STRINGS["inputs"][0]["data"] = ["35", *ROW[1:]]
V1_COLUMNS = {"inputs": {k: [v] * 20_000 for k, v in CHURN.items()}}
TRAVERSAL = {"parameters": {"version": "../../../x/iris/1"}}


@pytest.mark.parametrize(
    "path",
    [
        "/health/",
        "/v2",
        "/models/",
        "/v1/models/churn/",
        "/admin",  # nginx's own /admin -> /admin/ redirect (absolute_redirect off)
    ],
)
def test_no_answer_redirects_to_the_clients_host(stack: Stack, path: str) -> None:
    with httpx.Client(base_url=stack.gateway, timeout=10) as c:
        r = c.get(path, headers={"Host": EVIL})
    assert EVIL not in r.headers.get("location", ""), (path, r.status_code, r.headers)


def test_hostile_bodies_through_the_gateway_are_4xx(stack: Stack) -> None:
    cases = [
        ("/v2/models/churn/infer", {"Inference-Header-Content-Length": "9" * 400}, {}),
        ("/v2/models/churn/infer", {}, V2_STRINGS),
        ("/v1/models/churn:predict", {}, V1_COLUMNS),
        ("/predict/batch", {}, {"instances": [ROW] * 30_000}),
        ("/v2/repository/models/iris/load", {"X-API-Key": ADMIN_KEY}, TRAVERSAL),
    ]
    with httpx.Client(base_url=stack.gateway, timeout=30) as c:
        for path, headers, body in cases:
            r = c.post(path, content=json.dumps(body), headers=headers)
            assert r.status_code in (400, 422), (path, r.status_code, r.text[:200])
            assert r.headers["content-type"].startswith("application/json"), path
        assert c.get("/health").status_code == 200
