"""docker-compose.yml, the Dockerfiles and the nginx template, checked statically (no
Docker engine runs on these machines; the native stack runs the same files)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from modelgate.infra import RenderError, gateway_values, render
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def graceful_timeout() -> int:
    text = (ROOT / "services/api/gunicorn.conf.py").read_text()
    return int(re.search(r"^graceful_timeout = (\d+)", text, re.M).group(1))  # type: ignore[union-attr]


def seconds(value: str) -> int:
    assert value.endswith("s"), value
    return int(value[:-1])


def test_the_topology_is_there() -> None:
    assert set(SERVICES) == {
        *("gateway", "api-1", "api-2", "api-3", "redis", "prometheus", "grafana"),
        *("nginx-exporter", "redis-exporter"),
    }


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck(name: str) -> None:
    check = SERVICES[name]["healthcheck"]
    assert check["test"][0] == "CMD" and len(check["test"]) > 1
    assert seconds(check["interval"]) <= 10 and check["retries"] >= 3


def test_only_the_gateway_publishes_a_port() -> None:
    published = {n for n, s in SERVICES.items() if s.get("ports")}
    assert published == {"gateway"}
    assert SERVICES["gateway"]["ports"] == ["8080:8080"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned(name: str) -> None:
    image = SERVICES[name]["image"]
    repo, _, tag = image.rpartition(":")
    assert repo and tag and tag != "latest", image
    assert re.match(r"^v?\d+\.\d+\.\d+", tag), image


def test_api_replicas_wait_for_redis_and_report_ready_after_model_load() -> None:
    for name in ("api-1", "api-2", "api-3"):
        api = SERVICES[name]
        assert api["hostname"] == name
        assert api["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert "/ready" in " ".join(api["healthcheck"]["test"])
        assert seconds(api["healthcheck"]["start_period"]) >= 30
        assert seconds(api["stop_grace_period"]) > graceful_timeout()
        assert "ports" not in api


def test_every_depends_on_waits_for_health() -> None:
    for name, service in SERVICES.items():
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in SERVICES, (name, dep)
            assert cond == {"condition": "service_healthy"}, (name, dep)


def test_redis_requires_a_password_that_the_replicas_use() -> None:
    command = SERVICES["redis"]["command"]
    assert "--requirepass" in command
    assert "${REDIS_PASSWORD" in SERVICES["api-1"]["environment"]["MODELGATE_REDIS_URL"]


def test_mounted_files_exist() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source == "./models":
                continue  # built by `make models`
            if source in COMPOSE.get("volumes", {}):
                continue  # a named volume, not a file
            assert (ROOT / source).exists(), (name, source)
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_gateway_env_renders_the_template_completely() -> None:
    env = {k: str(v) for k, v in SERVICES["gateway"]["environment"].items()}
    template = (ROOT / "infra/nginx/templates/default.conf.template").read_text()
    rendered = render(template, env)
    assert "${" not in rendered
    assert "server api-2:8000 max_fails=1" in rendered
    assert "$request_id" in rendered  # nginx's own variables untouched


def test_render_refuses_missing_values() -> None:
    with pytest.raises(RenderError, match="API_3"):
        render("server ${API_3};", {})
    with pytest.raises(RenderError, match="exactly three"):
        gateway_values(listen="1", status_listen="2", upstreams=["a"], access_log="off")


def test_api_image_is_multi_stage_non_root_cpu_torch() -> None:
    text = (ROOT / "services/api/Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(froms) >= 2 and all(":" in f and "latest" not in f for f in froms)
    assert "torch==2.13.0" in text and "/whl/cpu" in text
    final = text.rsplit("FROM ", 1)[1]
    assert re.search(r"^USER (?!root)\w+", final, re.M)
    assert "modelgate.app:create_app()" in final


def test_gateway_image_carries_the_template() -> None:
    text = (ROOT / "services/gateway/Dockerfile").read_text()
    assert re.search(r"^FROM nginx:\d+\.\d+\.\d+", text, re.M)
    assert "COPY infra/nginx/templates/ /etc/nginx/templates/" in text


def test_the_ops_override_publishes_only_on_loopback() -> None:
    ops = yaml.safe_load((ROOT / "docker-compose.ops.yml").read_text())["services"]
    assert set(ops) <= set(SERVICES)
    for service in ops.values():
        assert all(port.startswith("127.0.0.1:") for port in service["ports"])
