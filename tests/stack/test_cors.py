"""CORS through the gateway: real browser-shaped preflights, answered by the replicas."""

from __future__ import annotations

import pytest

from tests.integration.test_api import CHURN
from tests.stack.conftest import CORS_ORIGIN, Stack

pytestmark = pytest.mark.stack


def preflight(
    origin: str, method: str = "POST", headers: str = "content-type,x-api-key"
) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def test_preflight_from_an_allowed_origin(stack: Stack) -> None:
    with stack.client("127.0.0.61") as c:
        answer = c.options("/predict", headers=preflight(CORS_ORIGIN))
    assert answer.status_code == 204, answer.text
    h = answer.headers
    assert h["access-control-allow-origin"] == CORS_ORIGIN
    assert "POST" in h["access-control-allow-methods"]
    assert {"content-type", "x-api-key"} <= set(h["access-control-allow-headers"].split(", "))
    assert h["access-control-max-age"] == "600"
    assert "origin" in h["vary"].lower()
    assert "access-control-allow-credentials" not in h
    assert h["x-request-id"]  # nginx's id, as on every answer


def test_preflights_that_are_refused(stack: Stack) -> None:
    with stack.client("127.0.0.62") as c:
        stranger = c.options("/predict", headers=preflight("https://evil.example.test"))
        method = c.options("/predict", headers=preflight(CORS_ORIGIN, method="DELETE"))
        header = c.options("/predict", headers=preflight(CORS_ORIGIN, headers="x-secret"))
    for answer, reason in [
        (stranger, "origin not allowed"),
        (method, "method 'DELETE' not allowed"),
        (header, "x-secret"),
    ]:
        assert answer.status_code == 403
        assert "access-control-allow-origin" not in answer.headers
        body = answer.json()
        assert body["error"] == "cors_refused" and reason in body["message"]
        assert body["request_id"] == answer.headers["x-request-id"]


def test_an_allowed_origin_can_read_the_quota_and_request_id_headers(stack: Stack) -> None:
    with stack.client("127.0.0.63") as c:
        answer = c.post("/predict", json={"features": CHURN}, headers={"Origin": CORS_ORIGIN})
        other = c.post(
            "/predict", json={"features": CHURN}, headers={"Origin": "https://evil.example.test"}
        )
        plain = c.post("/predict", json={"features": CHURN})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == CORS_ORIGIN
    exposed = {
        h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")
    }
    assert {"x-request-id", "x-ratelimit-remaining", "x-ratelimit-limit", "retry-after"} <= exposed
    # The exposed headers are really there for the script to read.
    assert answer.headers["x-ratelimit-remaining"] and answer.headers["x-request-id"]
    # A stranger is served (CORS protects the browser's user, not the API) but the
    # browser gets no permission to read the answer.
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
