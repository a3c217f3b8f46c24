"""Tracing end to end: a real replica (gunicorn, quotas and cache on a real Redis)
exporting over OTLP/HTTP to a receiver the test runs, and the real nginx gateway passing
on or starting the W3C traceparent."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelgate.stack.infra import gateway_values, render_native_gateway
from tests.conftest import (
    ROOT,
    Server,
    free_port,
    start_redis,
    start_replica,
    stop_process,
    wait_until,
)
from tests.integration.test_api import CHURN
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])")


class Traced:
    def __init__(self, replica: Server, receiver: OtlpReceiver, predictions: Path) -> None:
        self.replica = replica
        self.receiver = receiver
        self.predictions = predictions

    def access_line(self, request_id: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [
                e
                for e in _json_lines(self.replica.log())
                if e.get("logger") == "modelgate.access" and e.get("request_id") == request_id
            ]
            return bool(found)

        wait_until(check, 10, f"access line of {request_id}")
        return found[0]

    def prediction_line(self, request_id: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def check() -> bool:
            lines = [
                line
                for path in self.predictions.glob("*.jsonl")
                for line in _json_lines(path.read_text())
            ]
            found[:] = [e for e in lines if e.get("request_id") == request_id]
            return bool(found)

        wait_until(check, 10, f"prediction log line of {request_id}")
        return found[0]


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


@pytest.fixture(scope="module")
def traced(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    logs = tmp_path_factory.mktemp("tracing")
    receiver = OtlpReceiver().start()
    redis = start_redis()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        # Parent-based: a client's sampled flag decides; a request without one is traced.
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_SERVICE_NAME": "modelgate-test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: spans arrive quickly for the polls below
        "MODELGATE_REDIS_URL": redis.url,
        "MODELGATE_CACHE__ENABLED": "true",
        "MODELGATE_RATE_LIMIT__ENABLED": "true",
        "MODELGATE_PREDICTION_LOG__DIR": str(logs / "predictions"),
        "MODELGATE_INSTANCE": "traced-1",
        # Long enough for concurrent requests to share a batch.
        "MODELGATE_BATCHING__MAX_BATCH_DELAY_MS": "20",
        "MODELGATE_MODELS": '["churn"]',
    }
    try:
        replica = start_replica(demo_models, logs, workers=1, env=env)
        try:
            yield Traced(replica, receiver, logs / "predictions")
        finally:
            stop_process(replica.proc)
    finally:
        stop_process(redis.proc)
        receiver.stop()


def new_traceparent(sampled: bool = True) -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-{'01' if sampled else '00'}", trace_id, parent_id


def in_trace(spans: list[ReceivedSpan], trace_id: str) -> dict[str, list[ReceivedSpan]]:
    by_name: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        if s.trace_id == trace_id:
            by_name.setdefault(s.name, []).append(s)
    return by_name


def features(i: int) -> dict[str, Any]:
    """A churn row of its own (no cache hit from another test), valid for the manifest."""
    return {**CHURN, "num_purchases": i % 1000, "account_age_days": 100 + secrets.randbelow(3000)}


def test_a_sampled_request_is_traced_under_the_callers_traceparent(traced: Traced) -> None:
    header, trace_id, parent_id = new_traceparent()
    rid = f"tr-{secrets.token_hex(4)}"
    r = httpx.post(
        f"{traced.replica.url}/models/churn/predict",
        json={"features": features(1)},
        headers={"traceparent": header, "X-Request-ID": rid},
    )
    assert r.status_code == 200
    spans = traced.receiver.wait_for(lambda s: "tensor call" in in_trace(s, trace_id))
    trace = in_trace(spans, trace_id)
    (server,) = trace["POST /models/{name}/predict"]
    assert server.kind == SERVER_KIND
    assert server.parent_span_id == parent_id  # the caller's span, kept
    assert server.attributes["http.route"] == "/models/{name}/predict"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["modelgate.model.name"] == "churn"
    assert server.attributes["modelgate.model.version"] == r.json()["model_version"]
    assert server.attributes["modelgate.rows"] == 1
    assert server.attributes["modelgate.rows.cached"] == 0
    assert server.resource["service.name"] == "modelgate-test"
    assert server.resource["service.instance.id"] == "traced-1"
    # The request's steps are its children; the tensor call is the batch's.
    for name in ("quota lookup", "cache lookup", "queue wait", "batch"):
        (step,) = trace[name]
        assert step.parent_span_id == server.span_id, name
        assert server.start_ns <= step.start_ns <= step.end_ns <= server.end_ns, name
    (batch,) = trace["batch"]
    (tensor,) = trace["tensor call"]
    assert tensor.parent_span_id == batch.span_id
    assert batch.start_ns <= tensor.start_ns <= tensor.end_ns <= batch.end_ns
    assert (trace["queue wait"][0].end_ns) == batch.start_ns
    assert [(link.trace_id, link.span_id) for link in batch.links] == [(trace_id, server.span_id)]
    assert batch.attributes["modelgate.batch.rows"] == 1
    assert batch.attributes["modelgate.model.name"] == "churn"
    assert tensor.attributes["modelgate.batch.rows"] == 1
    assert trace["cache lookup"][0].attributes["modelgate.rows.cached"] == 0
    # The trace id where an operator starts from: the access line and the prediction log.
    assert traced.access_line(rid)["trace_id"] == trace_id
    assert traced.prediction_line(rid)["trace_id"] == trace_id


def test_a_cached_answer_has_no_batch(traced: Traced) -> None:
    row = features(2)
    first = httpx.post(f"{traced.replica.url}/predict", json={"features": row})
    assert first.status_code == 200
    header, trace_id, _ = new_traceparent()
    r = httpx.post(
        f"{traced.replica.url}/predict", json={"features": row}, headers={"traceparent": header}
    )
    assert r.status_code == 200 and r.headers["x-cache"] == "HIT"
    spans = traced.receiver.wait_for(lambda s: "POST /predict" in in_trace(s, trace_id))
    trace = in_trace(spans, trace_id)
    assert trace["POST /predict"][0].attributes["modelgate.rows.cached"] == 1
    assert trace["cache lookup"][0].attributes["modelgate.rows.cached"] == 1
    assert "batch" not in trace and "queue wait" not in trace


def test_an_unsampled_traceparent_is_followed_and_leaves_no_trace_id(traced: Traced) -> None:
    header, trace_id, _ = new_traceparent(sampled=False)
    rid = f"unsampled-{secrets.token_hex(4)}"
    r = httpx.post(
        f"{traced.replica.url}/predict",
        json={"features": features(3)},
        headers={"traceparent": header, "X-Request-ID": rid},
    )
    assert r.status_code == 200
    # A sampled request after it: once its spans are in, the earlier one's would be too.
    after, after_id, _ = new_traceparent()
    httpx.post(
        f"{traced.replica.url}/predict",
        json={"features": features(4)},
        headers={"traceparent": after},
    )
    spans = traced.receiver.wait_for(lambda s: "tensor call" in in_trace(s, after_id))
    assert in_trace(spans, trace_id) == {}
    assert "trace_id" not in traced.access_line(rid)
    assert "trace_id" not in traced.prediction_line(rid)


def test_a_request_without_traceparent_starts_a_trace(traced: Traced) -> None:
    rid = f"root-{secrets.token_hex(4)}"
    r = httpx.post(
        f"{traced.replica.url}/predict",
        json={"features": features(5)},
        headers={"X-Request-ID": rid},
    )
    assert r.status_code == 200
    trace_id = traced.access_line(rid)["trace_id"]
    spans = traced.receiver.wait_for(lambda s: "POST /predict" in in_trace(s, trace_id))
    (server,) = in_trace(spans, trace_id)["POST /predict"]
    assert server.parent_span_id == ""


def test_a_batch_links_every_request_it_carried(traced: Traced) -> None:
    """Concurrent requests share a batch: one batch span, under the first of them, with a
    link to each request's span, and each request's own queue wait."""

    def one(header: str, i: int) -> int:
        r = httpx.post(
            f"{traced.replica.url}/predict",
            json={"features": features(100 + i)},
            headers={"traceparent": header},
            timeout=10,
        )
        return r.status_code

    shared: list[ReceivedSpan] = []
    with ThreadPoolExecutor(8) as pool:
        for _ in range(20):  # bounded: a burst of 8 shares a batch almost always
            headers = [new_traceparent() for _ in range(8)]
            ids = {trace_id for _, trace_id, _ in headers}
            statuses = list(pool.map(one, [h for h, _, _ in headers], range(8)))
            assert statuses == [200] * 8
            spans = traced.receiver.wait_for(
                lambda s, ids=ids: (
                    ids <= {x.trace_id for x in s if x.name == "tensor call"}
                    or sum(len(x.links) for x in s if x.name == "batch" and x.trace_id in ids) >= 8
                )
            )
            shared = [
                s for s in spans if s.name == "batch" and s.trace_id in ids and len(s.links) > 1
            ]
            if shared:
                break
    assert shared, "no two concurrent requests ever shared a batch"
    batch = shared[0]
    servers = {s.span_id: s for s in traced.receiver.spans() if s.kind == SERVER_KIND}
    linked = [servers[link.span_id] for link in batch.links]
    assert {link.trace_id for link in batch.links} == {s.trace_id for s in linked}
    assert batch.parent_span_id in {s.span_id for s in linked}
    assert batch.attributes["modelgate.batch.requests"] == len(batch.links)
    assert batch.attributes["modelgate.batch.rows"] == sum(
        link.attributes["modelgate.rows"] for link in batch.links
    )
    spans = traced.receiver.spans()
    for server in linked:  # each carried request waited for this batch, in its own trace
        waits = [s for s in spans if s.name == "queue wait" and s.parent_span_id == server.span_id]
        assert [w.end_ns for w in waits] == [batch.start_ns]
        assert waits[0].trace_id == server.trace_id


# --- the gateway ---------------------------------------------------------------------------


class EchoUpstream:
    """An upstream that answers every request 200 and keeps the trace headers it got."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[dict[str, str | None]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen.append(
                    {
                        "traceparent": self.headers.get("traceparent"),
                        "tracestate": self.headers.get("tracestate"),
                        "count": str(len(self.headers.get_all("traceparent") or [])),
                    }
                )
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, EchoUpstream, Path]]:
    out = tmp_path_factory.mktemp("trace-gateway")
    upstream = EchoUpstream()
    port = free_port()
    values = gateway_values(
        listen=f"127.0.0.1:{port}",
        status_listen=f"127.0.0.1:{free_port()}",
        upstreams=[f"127.0.0.1:{upstream.port}"] * 3,
        access_log=str(out / "access.log"),
        trace_sample_percent=50,
    )
    conf = render_native_gateway(ROOT / "infra", out, values)
    proc = subprocess.Popen([NGINX, "-c", str(conf)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/gateway/health").status_code == 200, 20, "nginx", proc)
        yield url, upstream, out / "access.log"
    finally:
        stop_process(proc)
        upstream.stop()


def test_the_gateway_starts_a_trace_when_the_caller_sent_none(
    gateway: tuple[str, EchoUpstream, Path],
) -> None:
    url, upstream, access_log = gateway
    flags = set()
    with httpx.Client(base_url=url, timeout=10) as c:
        for _ in range(40):  # at 50 %: both flags, but for a 2^-39 chance
            upstream.seen.clear()
            r = c.post("/predict", json={})
            assert r.status_code == 200
            (got,) = upstream.seen
            assert got["count"] == "1"
            m = TRACEPARENT.fullmatch(got["traceparent"] or "")
            assert m is not None, got
            # The trace id is the gateway's request id, which the caller gets back.
            assert m.group(1) == r.headers["x-request-id"]
            assert m.group(2) == m.group(1)[:16]
            flags.add(m.group(3))
    assert flags == {"00", "01"}
    lines = [json.loads(line) for line in access_log.read_text().splitlines()]
    last = lines[-1]
    assert last["traceparent"].split("-")[1] == last["request_id"]


def test_the_gateway_passes_a_callers_traceparent_on_unchanged(
    gateway: tuple[str, EchoUpstream, Path],
) -> None:
    url, upstream, _ = gateway
    for sampled in (True, False):
        header, _, _ = new_traceparent(sampled)
        upstream.seen.clear()
        r = httpx.post(
            f"{url}/predict", json={}, headers={"traceparent": header, "tracestate": "vendor=1"}
        )
        assert r.status_code == 200
        assert upstream.seen == [{"traceparent": header, "tracestate": "vendor=1", "count": "1"}]


@pytest.mark.parametrize(
    "bad",
    [
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",  # an all-zero trace id is invalid
        "00-" + "A" * 32 + "-" + "1" * 16 + "-01",  # upper case
        "garbage",
    ],
)
def test_the_gateway_replaces_a_malformed_traceparent(
    gateway: tuple[str, EchoUpstream, Path], bad: str
) -> None:
    url, upstream, _ = gateway
    upstream.seen.clear()
    r = httpx.post(f"{url}/predict", json={}, headers={"traceparent": bad, "tracestate": "v=1"})
    assert r.status_code == 200
    (got,) = upstream.seen
    m = TRACEPARENT.fullmatch(got["traceparent"] or "")
    assert m is not None and m.group(1) == r.headers["x-request-id"]
    assert got["tracestate"] is None  # it belonged to the refused traceparent
