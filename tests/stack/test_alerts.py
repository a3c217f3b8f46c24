"""Every replica down: what the gateway answers is counted, the dashboards show 100 % 5xx
(not "no data"), and the 5xx alert reaches a webhook.

The stack here is the native stack's own processes, from ``modelgate.stack.launch.commands``
with the same argv, minus Redis and the replicas: the gateway, the gateway's log exporter
(``modelgate gateway-exporter``), Alertmanager and Prometheus. The replicas' ports are
free ports where nothing listens, as after every replica died. It starts in seconds,
where a full stack (three replicas to start, then stop) would add about a minute to
``make test``. Prometheus
scrapes every second and alerts wait no ``for:`` (``StackConfig`` settings a test may
use); Alertmanager's ``group_wait`` is 1 s. Every wait below polls.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from modelgate.stack.config import StackConfig
from modelgate.stack.launch import commands, http_ok, probes
from tests.conftest import ROOT, free_port, stop_process, wait_until
from tests.stack.test_dashboards import dashboard_queries

pytestmark = pytest.mark.stack

RUNS = ("gateway-log-exporter", "gateway", "alertmanager", "prometheus")
ANSWERS = "modelgate_gateway_responses_total"


@dataclass
class Webhook:
    """A receiver for Alertmanager's webhook: every JSON body it was sent."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        return [
            alert
            for message in list(self.received)
            for alert in message.get("alerts", [])
            if alert["labels"].get("alertname") == alertname and alert["status"] == "firing"
        ]


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    port = free_port()
    hook = Webhook(f"http://127.0.0.1:{port}/alerts")

    class Receive(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            hook.received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:  # quiet: pytest shows failures
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Receive)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()
    thread.join(10)


@dataclass
class DarkStack:
    config: StackConfig
    gateway: str
    prometheus: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]  # type: ignore[no-any-return]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def answered(self, status: int, by: str = "gateway") -> float:
        match = f'job="gateway", status="{status}", answered_by="{by}"'
        return self.value(f"sum(modelgate_gateway_responses_total{{{match}}})") or 0.0


@pytest.fixture(scope="module")
def dark(
    stack_models: Path, tmp_path_factory: pytest.TempPathFactory, webhook: Webhook
) -> Iterator[DarkStack]:
    config = StackConfig(
        dir=tmp_path_factory.mktemp("dark"),
        infra=ROOT / "infra",
        model_repository=stack_models,
        gateway_port=free_port(),
        gateway_status_port=free_port(),
        replica_ports=[free_port() for _ in range(3)],  # nothing listens there
        redis_port=free_port(),
        prometheus_port=free_port(),
        nginx_exporter_port=free_port(),
        redis_exporter_port=free_port(),
        gateway_log_port=free_port(),
        gateway_log_exporter_port=free_port(),
        alertmanager_port=free_port(),
        alert_webhook_url=webhook.url,
        scrape_interval="1s",
        alert_for="0s",
        alert_group_wait="1s",
    )
    logs = config.dir / "logs"
    logs.mkdir(parents=True)
    table = probes(config)
    # The stack's own gateway probe goes through to a replica; here none answers.
    table["gateway"] = (lambda: http_ok(f"{config.gateway_url}/gateway/health"), "")
    running: list[subprocess.Popen[bytes]] = []
    try:
        for name, argv, env in commands(config):
            if name not in RUNS:
                continue
            with (logs / f"{name}.log").open("wb") as log:
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env or None)
            running.append(proc)
            wait_until(table[name][0], 60, name, proc)
        dark = DarkStack(config, config.gateway_url, config.url(config.prometheus_port))
        # As in a stack that has run a while: Prometheus has seen the 502 series at 0,
        # so the first 502s are an increase (rate() ignores a series' first sample).
        wait_until(lambda: dark.query(f'{ANSWERS}{{status="502"}}'), 30, "first scrape")
        yield dark
    finally:
        for proc in reversed(running):
            stop_process(proc)  # by PID


def gateway_queries() -> list[tuple[str, str]]:
    """Every panel query and recording rule about the gateway's answers."""
    rules = yaml.safe_load((ROOT / "infra/prometheus/rules/recording.yml").read_text())
    recorded = [r["record"] for g in rules["groups"] for r in g["rules"]]
    return [(name, name) for name in recorded if "modelgate_gateway" in name] + [
        (title, expr) for title, expr in dashboard_queries() if "modelgate_gateway" in expr
    ]


def test_with_every_replica_down_the_dashboards_show_100_percent_5xx(dark: DarkStack) -> None:
    before = dark.answered(502)
    with httpx.Client(base_url=dark.gateway, timeout=10) as c:
        answers = [c.post("/predict", json={"features": [1, 2, 3, 4]}) for _ in range(40)]
    assert {a.status_code for a in answers} == {502}
    assert {a.json()["error"] for a in answers} == {"bad_gateway"}
    wait_until(lambda: dark.answered(502) == before + 40, 30, "the 502s counted")

    # The dashboard: every query about the gateway has data, and the 5xx panels read
    # 100 % — while the replicas' own error ratio, the old panel, has nothing to show.
    queries = gateway_queries()
    assert len(queries) >= 6, queries
    pending = list(queries)

    def all_have_data() -> bool:
        pending[:] = [(title, expr) for title, expr in pending if not dark.query(expr)]
        return not pending

    try:
        wait_until(all_have_data, 30, "data for every gateway panel and rule")
    except TimeoutError:
        pytest.fail("no data for:\n" + "\n".join(f"{t}: {e}" for t, e in pending))
    [(_, stat)] = [(t, e) for t, e in dashboard_queries() if t.endswith("5xx error rate (gateway)")]
    try:
        wait_until(lambda: dark.value(stat) == 1.0, 30, "the 5xx stat at 100 %")
    except TimeoutError:
        shown = dark.query(f'{ANSWERS}{{status="502"}}[20s]')
        pytest.fail(f"{stat} = {dark.value(stat)}; by status: {shown}")
    assert dark.value("job:modelgate_gateway_errors_5xx:ratio_rate5m") == 1.0
    assert dark.query("job:modelgate_http_errors_5xx:ratio_rate1m") == []
    assert dark.value('sum(up{job="modelgate-api"})') == 0

    # nginx's other answers of its own are counted too, as the gateway's.
    not_found, too_large = dark.answered(404), dark.answered(413)
    with httpx.Client(base_url=dark.gateway, timeout=30) as c:
        assert c.get("/metrics").status_code == 404  # never served through the gateway
        big = c.post("/predict", content=b"0" * (5 << 20), headers={"Content-Type": "text/plain"})
        assert big.status_code == 413
    wait_until(lambda: dark.answered(404) == not_found + 1, 30, "the 404 counted")
    wait_until(lambda: dark.answered(413) == too_large + 1, 30, "the 413 counted")
    assert dark.value(f'sum({ANSWERS}{{answered_by="replica"}})') == 0  # none passed on


def test_the_5xx_alert_reaches_the_webhook(dark: DarkStack, webhook: Webhook) -> None:
    alerts: list[dict[str, Any]] = []
    with httpx.Client(base_url=dark.gateway, timeout=10) as c:

        def fired() -> bool:
            # Traffic keeps flowing while we wait: a rate needs fresh increments.
            for _ in range(5):
                assert c.post("/predict", json={"features": [1]}).status_code == 502
            alerts[:] = webhook.firing("ModelgateHighErrorRate")
            return bool(alerts)

        wait_until(fired, 60, "ModelgateHighErrorRate at the webhook")
    alert = alerts[0]
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["job"] == "gateway"
    assert alert["annotations"]["summary"].startswith("100% of the gateway's answers are 5xx")
    # Every replica is reported down as well. Prometheus fires the alert per replica, as
    # each one's scrapes fail; Alertmanager sends the group's first notification with
    # those firing by then and the rest group_interval (5 min) later, so the webhook has
    # one or more of them, and Prometheus has all three.
    replicas = {f"127.0.0.1:{p}" for p in dark.config.replica_ports}
    wait_until(lambda: webhook.firing("ModelgateReplicaDown"), 30, "ModelgateReplicaDown")
    reported = {a["labels"]["instance"] for a in webhook.firing("ModelgateReplicaDown")}
    assert reported and reported <= replicas, reported

    def firing_for() -> set[str]:
        found = dark.query('ALERTS{alertname="ModelgateReplicaDown", alertstate="firing"}')
        return {r["metric"]["instance"] for r in found}

    wait_until(lambda: firing_for() == replicas, 30, "ModelgateReplicaDown for every replica")
