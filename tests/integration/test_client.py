"""modelgate.client against real replicas: results, keys, request ids, and retries."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelgate.client import APIError, AsyncClient, Client, retry_after_seconds
from tests.conftest import Server
from tests.integration.test_api import CHURN, IRIS

pytestmark = pytest.mark.integration


def retries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "modelgate.client"]


def test_results_are_typed_and_match_the_raw_answers(replica: Server) -> None:
    raw = httpx.post(f"{replica.url}/models/iris/predict", json={"features": IRIS}).json()
    with Client(replica.url) as mg:
        one = mg.predict(IRIS, model="iris")
        assert (one.model_name, one.model_version) == ("iris", "1")
        assert one.prediction == raw["prediction"] and one.output["class_name"]
        assert one.output["probabilities"] == raw["probabilities"]
        pinned = mg.predict(list(CHURN.values()), model="churn", version="1")
        assert (pinned.model_name, pinned.model_version) == ("churn", "1")
        default = mg.predict(CHURN)
        assert default.model_name == "churn" and default.model_version == "2"

        batch = mg.predict_batch([CHURN, {**CHURN, "age": 60}], model="churn")
        assert [p.model_version for p in batch.predictions] == ["2", "2"]
        assert batch.predictions[0].prediction == default.prediction

        models = mg.models()
        assert models.default_model == "churn"
        assert [v.version for v in models["churn"].versions] == ["1", "2"]
        assert models["churn"].default_version == "2"

        health = mg.health()
        assert health.status == "ok" and health.models["iris"] == ["1"]


def test_every_call_sends_a_request_id_and_keeps_the_callers(replica: Server) -> None:
    with Client(replica.url) as mg:
        ids = {mg.predict(CHURN).request_id for _ in range(3)}
        assert len(ids) == 3 and all(ids)
        assert mg.predict(CHURN, request_id="order-42").request_id == "order-42"


def test_a_4xx_is_raised_at_once_never_retried(
    replica: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "modelgate.client")
    with Client(replica.url, retries=5) as mg:
        with pytest.raises(APIError) as bad:
            mg.predict({**CHURN, "age": "old"}, request_id="bad-1")
        assert bad.value.status_code == 422 and bad.value.field == "features.age"
        assert bad.value.request_id == "bad-1"
        with pytest.raises(APIError) as missing:
            mg.predict(CHURN, model="churn", version="9")
        assert missing.value.status_code == 404
    assert retries(caplog) == []


def test_api_key_is_sent_and_a_wrong_one_is_not_retried(
    demo_models: Path, replica_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "modelgate.client")
    digest = hashlib.sha256(b"client-key-1").hexdigest()
    s = replica_factory(
        demo_models, workers=1, env={"MODELGATE_AUTH__API_KEY_SHA256": f'["{digest}"]'}
    )
    with Client(s.url, api_key="client-key-1") as mg:
        assert mg.predict(CHURN).model_name == "churn"
    with Client(s.url, api_key="client-key-2") as mg, pytest.raises(APIError) as wrong:
        mg.predict(CHURN)
    assert wrong.value.status_code == 403 and wrong.value.code == "forbidden"
    assert retries(caplog) == []


def test_a_real_429_is_retried_after_retry_after(
    demo_models: Path, replica_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A per-second quota on one worker (the in-memory counter, exact with one worker):
    the third call in a second is refused with ``Retry-After: 1``, and the client waits
    that long and gets its answer."""
    caplog.set_level(logging.INFO, "modelgate.client")
    env = {"MODELGATE_RATE_LIMIT__ENABLED": "true", "MODELGATE_RATE_LIMIT__PREDICT": "2/second"}
    s = replica_factory(demo_models, workers=1, env=env)
    with Client(s.url, retries=3) as mg:
        # Until a 429 happens: the window may roll over between two calls.
        for _ in range(20):
            answer = mg.predict(CHURN)
            if retries(caplog):
                break
        assert answer.model_name == "churn"
    first = retries(caplog)[0]
    assert first.retry_reason == "429"  # type: ignore[attr-defined]
    assert first.retry_wait_s == 1.0  # type: ignore[attr-defined]


def test_a_retry_after_longer_than_accepted_raises_the_429(
    demo_models: Path, replica_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "modelgate.client")
    env = {"MODELGATE_RATE_LIMIT__ENABLED": "true", "MODELGATE_RATE_LIMIT__PREDICT": "1/hour"}
    s = replica_factory(demo_models, workers=1, env=env)
    with Client(s.url, max_retry_after_s=5) as mg:
        mg.predict(CHURN)
        with pytest.raises(APIError) as limited:
            mg.predict(CHURN)
    assert limited.value.status_code == 429 and limited.value.code == "rate_limited"
    assert retries(caplog) == []


def test_connection_errors_are_retried_then_raised(caplog: pytest.LogCaptureFixture) -> None:
    from tests.ports import free_port

    caplog.set_level(logging.INFO, "modelgate.client")
    with (
        Client(f"http://127.0.0.1:{free_port()}", retries=2, backoff_s=0.01) as mg,
        pytest.raises(httpx.ConnectError),
    ):
        mg.health()
    assert len(retries(caplog)) == 2


def test_the_async_client_gives_the_same_answers(replica: Server) -> None:
    async def calls() -> None:
        async with AsyncClient(replica.url) as mg:
            one, batch = await asyncio.gather(
                mg.predict(IRIS, model="iris"), mg.predict_batch([IRIS, IRIS], model="iris")
            )
            assert one.prediction == batch.predictions[1].prediction
            assert one.request_id != batch.request_id
            assert (await mg.models())["iris"].default_version == "1"
            assert (await mg.health()).status == "ok"
            with pytest.raises(APIError) as bad:
                await mg.predict({**IRIS, "petal_width": None}, model="iris")
            assert bad.value.status_code == 422

    asyncio.run(calls())


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 02 Dec 2026 00:00:10 GMT", now=1_796_169_600.0) == 10.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
