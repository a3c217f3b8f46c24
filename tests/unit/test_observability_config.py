"""infra/prometheus and infra/grafana, checked with promtool and against Grafana's
provisioning rules. (Every query is also run against a live Prometheus in tests/stack.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from modelgate.stack.config import StackConfig
from modelgate.stack.launch import render_alertmanager, render_prometheus
from tests.conftest import ROOT

PROM = ROOT / "infra" / "prometheus"
GRAFANA = ROOT / "infra" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def promtool(*args: str, cwd: Path = PROM) -> str:
    exe = shutil.which("promtool") or "/usr/bin/promtool"
    result = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_prometheus_config_and_rules_are_valid() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS: 2 rule files found" in out
    promtool("check", "rules", *[str(p) for p in sorted((PROM / "rules").glob("*.yml"))])


RULE_TESTS = sorted((PROM / "tests").glob("*_test.yml"))


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(path: Path) -> None:
    assert "SUCCESS" in promtool("test", "rules", str(path.relative_to(PROM)))


def test_every_alert_has_a_unit_test() -> None:
    alerts = {
        r["alert"]
        for g in yaml.safe_load((PROM / "rules/alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }
    tests = [t for path in RULE_TESTS for t in yaml.safe_load(path.read_text())["tests"]]
    tested = {a["alertname"] for t in tests for a in t.get("alert_rule_test", [])}
    assert alerts == tested


def test_the_native_rendering_is_valid_and_points_at_loopback(tmp_path: Path) -> None:
    config = StackConfig(dir=tmp_path, infra=ROOT / "infra", model_repository=tmp_path)
    rendered = render_prometheus(config)
    promtool("check", "config", str(rendered), cwd=tmp_path)
    targets = [
        t
        for job in yaml.safe_load(rendered.read_text())["scrape_configs"]
        for s in job["static_configs"]
        for t in s["targets"]
    ]
    assert targets == [
        *("127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"),
        *("127.0.0.1:9113", "127.0.0.1:3903", "127.0.0.1:9121", "127.0.0.1:9093"),
        "127.0.0.1:9090",
    ]
    [alertmanagers] = yaml.safe_load(rendered.read_text())["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"] == [{"targets": ["127.0.0.1:9093"]}]


def test_a_test_stack_can_shorten_every_alert_wait(tmp_path: Path) -> None:
    config = StackConfig(
        dir=tmp_path,
        infra=ROOT / "infra",
        model_repository=tmp_path,
        scrape_interval="1s",
        alert_for="0s",
    )
    rendered = render_prometheus(config)
    promtool("check", "config", str(rendered), cwd=tmp_path)
    source = yaml.safe_load(rendered.read_text())
    assert source["global"] == {"scrape_interval": "1s", "evaluation_interval": "1s"}
    alerts = yaml.safe_load(Path(source["rule_files"][1]).read_text())
    waits = {r["alert"]: r.get("for") for g in alerts["groups"] for r in g["rules"]}
    assert waits and set(waits.values()) == {"0s"}


def amtool(*args: str) -> str:
    exe = shutil.which("amtool") or "/usr/bin/amtool"
    result = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def compose_alertmanager_config(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    """What deploy/compose/alertmanager-entrypoint.sh renders, with `true` as the binary."""
    env = {
        "ALERTMANAGER_TEMPLATE": str(ROOT / "infra/alertmanager/alertmanager.yml"),
        "ALERTMANAGER_CONFIG": str(tmp_path / "compose.yml"),
        "ALERTMANAGER_WEBHOOK_URL": url,
        "PATH": "/usr/bin:/bin",
    }
    script = str(ROOT / "deploy/compose/alertmanager-entrypoint.sh")
    return subprocess.run(
        ["sh", script, "true"], env=env, capture_output=True, text=True, check=False
    )


def test_alertmanager_config_is_valid_with_and_without_a_webhook(tmp_path: Path) -> None:
    amtool("check-config", str(ROOT / "infra/alertmanager/alertmanager.yml"))
    url = "https://hooks.example.test/alerts?team=ml&x=1"
    config = StackConfig(
        dir=tmp_path, infra=ROOT / "infra", model_repository=tmp_path, alert_webhook_url=url
    )
    native = render_alertmanager(config)
    amtool("check-config", str(native))
    parsed = yaml.safe_load(native.read_text())
    [receiver] = parsed["receivers"]
    assert parsed["route"]["receiver"] == receiver["name"]
    assert receiver["webhook_configs"] == [{"url": url, "send_resolved": True}]
    # compose renders the same configuration from ALERTMANAGER_WEBHOOK_URL
    assert compose_alertmanager_config(tmp_path, url).returncode == 0
    amtool("check-config", str(tmp_path / "compose.yml"))
    assert yaml.safe_load((tmp_path / "compose.yml").read_text()) == parsed


@pytest.mark.parametrize("url", ["ftp://x/y", 'http://x/"y', "http://x/ y", "http://x/\\ny"])
def test_compose_refuses_a_webhook_url_that_would_break_the_config(
    tmp_path: Path, url: str
) -> None:
    result = compose_alertmanager_config(tmp_path, url)
    assert result.returncode == 2 and "ALERTMANAGER_WEBHOOK_URL" in result.stderr


def test_prometheus_scrapes_replicas_directly_not_the_gateway() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    [api] = [j for j in config["scrape_configs"] if j["job_name"] == "modelgate-api"]
    assert api["static_configs"][0]["targets"] == ["api-1:8000", "api-2:8000", "api-3:8000"]


def panel_targets(dashboard: dict) -> list[dict]:  # type: ignore[type-arg]
    return [t for p in dashboard["panels"] for t in p.get("targets", [])]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_for_provisioning(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["id"] is None and dashboard["uid"]
    datasource_uid = yaml.safe_load(
        (GRAFANA / "provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]["uid"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource_uid}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource_uid
            assert target["expr"].strip() and "$" not in target["expr"]


def test_dashboard_covers_what_operators_watch() -> None:
    exprs = " ".join(
        t["expr"] for d in DASHBOARDS for t in panel_targets(json.loads(d.read_text()))
    )
    for needed in (
        "p50_1m", "p95_1m", "p99_1m", "instance:modelgate_http_requests:rate1m",
        "errors_4xx", "errors_5xx", "cache_hit", "modelgate_batch_size_rows",
        "modelgate_inference_duration_seconds", "modelgate_rate_limited_requests_total",
        'up{job="modelgate-api"}', "modelgate_model_info", "modelgate_rank_items",
        "modelgate_feature_lookups_total", "modelgate_feature_fetch_seconds", '.*/rank"',
    ):  # fmt: skip
        assert needed in exprs, needed


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/modelgate.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert f"./infra/grafana/dashboards:{path}:ro" in compose["services"]["grafana"]["volumes"]
