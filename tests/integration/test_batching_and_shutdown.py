"""Dynamic batching and graceful shutdown, observed on real gunicorn replicas."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import wait_until
from tests.integration.test_api import CHURN

pytestmark = pytest.mark.integration


def instances(n: int) -> list[dict[str, Any]]:
    return [{**CHURN, "num_purchases": i, "account_age_days": 100 * i} for i in range(n)]


async def fire(url: str, path: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
        return await asyncio.gather(*(c.post(path, json=b) for b in bodies))


def test_concurrent_requests_are_batched_and_answers_stay_with_their_request(
    demo_models: Path, replica_factory: Any
) -> None:
    server = replica_factory(
        demo_models,
        workers=2,
        env={
            "MODELGATE_BATCHING__MAX_BATCH_SIZE": "8",
            "MODELGATE_BATCHING__MAX_BATCH_DELAY_MS": "150",
        },
    )
    feats = instances(24)
    # The truth for each input, one at a time through the batch route (no batching).
    solo = httpx.post(f"{server.url}/predict/batch", json={"instances": feats}, timeout=30)
    expected = [p["probability"] for p in solo.json()["predictions"]]

    responses = asyncio.run(fire(server.url, "/predict", [{"features": f} for f in feats]))
    assert all(r.status_code == 200 for r in responses)
    sizes = [int(r.headers["x-batch-size"]) for r in responses]
    # 24 concurrent requests over 2 workers with a 150 ms window: merged, never above 8.
    assert max(sizes) >= 2, sizes
    assert max(sizes) <= 8, sizes
    got = [r.json()["probability"] for r in responses]
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_sigterm_drains_in_flight_requests(demo_models: Path, replica_factory: Any) -> None:
    server = replica_factory(
        demo_models, workers=1, env={"MODELGATE_BATCHING__MAX_BATCH_DELAY_MS": "800"}
    )
    body = orjson.dumps({"features": CHURN})
    # A client that sent its headers but not yet its body is a request in flight: the
    # batcher waits for it (up to the 800 ms window) before running the other request.
    slow = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    slow.sendall(
        b"POST /predict HTTP/1.1\r\nHost: replica\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    result: dict[str, httpx.Response] = {}

    def queued_request() -> None:
        result["r"] = httpx.post(f"{server.url}/predict", json={"features": CHURN}, timeout=30)

    t = threading.Thread(target=queued_request)
    t.start()
    wait_until(
        lambda: httpx.get(f"{server.url}/health", timeout=2).json()["queued_rows"] == 1,
        10,
        "request waiting in the batcher",
    )
    server.proc.send_signal(signal.SIGTERM)
    slow.sendall(body)  # the slow client finishes after the stop signal
    answer = slow.makefile("rb").read()
    slow.close()
    t.join(30)
    assert result["r"].status_code == 200
    assert result["r"].json()["model_name"] == "churn"
    assert answer.startswith(b"HTTP/1.1 200") and b'"model_name":"churn"' in answer
    assert server.proc.wait(30) == 0
