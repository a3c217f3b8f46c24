"""docker-compose*.yml, the Dockerfiles, .dockerignore and .env.example, checked
statically: no Docker engine runs on these machines (the native stack runs the same
infra/ files for real). The compose files are validated against the Compose
Specification's JSON schema, before and after interpolation, and cross-checked beyond
what a schema can say: what a fresh clone holds, what each image can run, what each
container may do, and that no password has a default."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from modelgate.stack.infra import RenderError, gateway_values, render
from tests.conftest import ROOT

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.ops.yml", "docker-compose.models.yml")
BASE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = BASE["services"]
# Run once and exit, before the services that wait for them to complete.
ONE_SHOT = ("init", "features")
LONG_RUNNING = sorted(set(SERVICES) - set(ONE_SHOT))
REPLICAS = ("api-1", "api-2", "api-3")

# The commands each base image has on its PATH, from the images' own Dockerfiles (no
# engine here to look inside them): python:*-slim has no curl or wget; nginx:*-alpine,
# busybox, prom/prometheus (busybox-based) and grafana (alpine-based) have busybox's wget.
IMAGE_COMMANDS = {
    "python": {"python"},
    "nginx": {"wget", "sh"},
    "busybox": {"wget", "sh"},
    "redis": {"sh", "redis-server", "redis-cli", "cat", "grep", "tr", "head", "chmod", "mv"},
    "prom/prometheus": {"wget"},
    "prom/alertmanager": {"wget", "sh"},
    "grafana/grafana": {"wget"},
}
# Third-party images that already run as a non-root user (their Dockerfiles' USER).
IMAGE_USER = {
    "prom/prometheus": "nobody",
    "prom/alertmanager": "nobody",
    "grafana/grafana": "472",
}

_VAR = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


class Unset(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of every string in a parsed file: ${VAR}, ${VAR:-default},
    ${VAR-default}, ${VAR:?message}, $$ (a literal $)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?") and not current:
            raise Unset(f"{name}: {arg}")
        if current is None:
            raise Unset(name)  # compose would warn and substitute "": a silent mistake
        return current

    return _VAR.sub(one, value)


def variables(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(variables(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(variables(v) for v in value)) if value else set()
    if isinstance(value, str):
        return {m.group("name") or m.group("bare") for m in _VAR.finditer(value)} - {None}
    return set()


@cache
def compose_validator() -> jsonschema.Draft7Validator:
    # The file says draft-07 (with an $schema URL jsonschema doesn't recognise as such).
    schema = json.loads((ROOT / "tests/schemas/compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def validate(document: Any) -> None:
    compose_validator().validate(document)


@cache
def tracked_files() -> frozenset[str]:
    """What a fresh clone holds."""
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    return frozenset(p for p in out.split("\0") if p)


def in_clone(path: str) -> bool:
    path = path.removeprefix("./").rstrip("/")
    files = tracked_files()
    return path in files or any(f.startswith(path + "/") for f in files)


def env_example() -> dict[str, str]:
    """.env.example's variables, each with the default its (commented) line shows."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def base_image(service: dict[str, Any]) -> str:
    """The image repository a service's container really runs (a build's final FROM)."""
    build = service.get("build")
    if build:
        text = (ROOT / build["context"] / build["dockerfile"]).read_text()
        image = re.findall(r"^FROM (\S+)", text, re.M)[-1]
    else:
        image = service["image"]
    return str(image.rsplit(":", 1)[0])


def dockerfile_user(service: dict[str, Any]) -> str | None:
    build = service.get("build")
    if not build:
        return None
    final = (ROOT / build["context"] / build["dockerfile"]).read_text().rsplit("\nFROM ", 1)[-1]
    users = re.findall(r"^USER (\S+)", final, re.M)
    return users[-1] if users else None


def graceful_timeout() -> int:
    text = (ROOT / "services/api/gunicorn.conf.py").read_text()
    return int(re.search(r"^graceful_timeout = (\d+)", text, re.M).group(1))  # type: ignore[union-attr]


def seconds(value: str) -> int:
    assert value.endswith("s"), value
    return int(value[:-1])


# ---- the Compose Specification --------------------------------------------------------


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_files_match_the_compose_spec_as_written(name: str) -> None:
    validate(yaml.safe_load((ROOT / name).read_text()))


@pytest.mark.parametrize("env_source", ["defaults", ".env.example"])
def test_compose_files_match_the_compose_spec_once_interpolated(env_source: str) -> None:
    """Interpolated with an empty environment (a fresh clone without .env) and with every
    value .env.example shows: every variable resolves, and the result is still valid."""
    env = {} if env_source == "defaults" else env_example()
    for name in ("docker-compose.yml", "docker-compose.ops.yml"):
        validate(interpolate(yaml.safe_load((ROOT / name).read_text()), env))
    models = yaml.safe_load((ROOT / "docker-compose.models.yml").read_text())
    validate(interpolate(models, {**env, "MODELGATE_MODELS_DIR": "/srv/models"}))


def test_the_models_overlay_refuses_to_start_without_a_directory() -> None:
    models = yaml.safe_load((ROOT / "docker-compose.models.yml").read_text())
    with pytest.raises(Unset, match="MODELGATE_MODELS_DIR: set MODELGATE_MODELS_DIR"):
        interpolate(models, {})
    assert set(models["services"]) == {*REPLICAS, "features"}


def test_every_compose_variable_is_documented_in_env_example() -> None:
    documented = env_example()
    used = set().union(*(variables(yaml.safe_load((ROOT / n).read_text())) for n in COMPOSE_FILES))
    assert used - {"MODELGATE_MODELS_DIR"} <= set(documented), used - set(documented)
    # and the defaults .env.example shows are compose's own
    for name in used & set(documented):
        for match in re.finditer(
            rf"\$\{{{name}:?-([^}}]*)\}}", (ROOT / "docker-compose.yml").read_text()
        ):
            assert documented[name] == match.group(1), name


def test_env_example_lists_every_replica_setting() -> None:
    """Every MODELGATE_* setting the replicas read appears in .env.example, settable or
    listed as fixed by compose, so an operator can find each one."""
    from pydantic import BaseModel

    from modelgate.settings import Settings

    def names(model: type[BaseModel], prefix: str) -> set[str]:
        out = set()
        for field, info in model.model_fields.items():
            kind = info.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                out |= names(kind, f"{prefix}{field.upper()}__")
            else:
                out.add(f"{prefix}{field.upper()}")
        return out

    text = (ROOT / ".env.example").read_text()
    missing = {n for n in names(Settings, "MODELGATE_") if not re.search(rf"\b{n}=", text)}
    assert not missing, missing


# ---- a fresh clone -----------------------------------------------------------------------


def test_the_topology_is_there() -> None:
    assert set(SERVICES) == {
        *(
            "init",
            "features",
            "gateway",
            "api-1",
            "api-2",
            "api-3",
            "redis",
            "prometheus",
            "grafana",
        ),
        *("nginx-exporter", "redis-exporter", "gateway-log-exporter", "alertmanager"),
    }


def test_bind_mounts_and_build_files_exist_in_a_fresh_clone() -> None:
    """Nothing refers to models/ or another untracked path: Docker would create an empty
    root-owned directory in its place and the replicas would never become ready."""
    for file in COMPOSE_FILES:
        compose = yaml.safe_load((ROOT / file).read_text())
        named = set(BASE.get("volumes", {}))
        for name, service in compose["services"].items():
            for volume in service.get("volumes", []):
                source = volume.split(":")[0]
                if source.startswith("${"):
                    continue  # the models overlay: required from the user (tested above)
                if not source.startswith((".", "/")):
                    assert source in named, (file, name, source)
                    continue
                assert in_clone(source), (file, name, source)
            build = service.get("build")
            if build:
                assert in_clone(f"{build['context']}/{build['dockerfile']}"), (name, build)


def test_api_images_carry_the_demo_models() -> None:
    """A fresh clone has no models/: the image builds them as `make models` does."""
    text = (ROOT / "services/api/Dockerfile").read_text()
    assert "scripts/build_models.py --out /models" in text
    assert "COPY --from=models /models /models" in text
    assert "MODELGATE_MODEL_REPOSITORY=/models" in text
    for name in REPLICAS:
        assert SERVICES[name]["environment"]["MODELGATE_MODEL_REPOSITORY"] == "/models"
        assert not any(v.split(":")[1] == "/models" for v in SERVICES[name]["volumes"])


def dockerignore_includes(path: str) -> bool:
    included = True
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        parts = path.split("/")
        if any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            included = negate
    return included


@pytest.mark.parametrize(
    "dockerfile",
    sorted(str(p.relative_to(ROOT)) for p in (ROOT / "services").glob("*/*Dockerfile")),
)
def test_every_copy_source_is_in_the_build_context(dockerfile: str) -> None:
    """Each COPY source exists in a fresh clone and .dockerignore lets it through."""
    text = (ROOT / dockerfile).read_text()
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        for source in shlex.split(line)[:-1]:
            assert in_clone(source), (dockerfile, source)
            files = [
                f for f in tracked_files() if f == source or f.startswith(source.rstrip("/") + "/")
            ]
            assert files and all(
                dockerignore_includes(f) for f in files if "__pycache__" not in f
            ), (
                dockerfile,
                source,
            )
    assert not dockerignore_includes(".env") and not dockerignore_includes(
        "models/churn/2/model.pt2"
    )
    assert not dockerignore_includes(".venv/bin/python")


# ---- what the containers run -------------------------------------------------------------


def healthcheck_commands(test: list[str]) -> set[str]:
    if test[0] == "CMD":
        return {test[1]}
    assert test[0] == "CMD-SHELL", test
    commands = set()
    for segment in re.split(r"\||&&|;", test[1]):
        words = [w for w in shlex.split(segment) if not re.match(r"^[A-Z_]+=", w)]
        if words:
            commands.add(words[0])
    return commands


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_every_service_has_a_healthcheck_its_image_can_run(name: str) -> None:
    check = SERVICES[name]["healthcheck"]
    assert seconds(check["interval"]) <= 10 and check["retries"] >= 3
    available = IMAGE_COMMANDS[base_image(SERVICES[name])]
    assert healthcheck_commands(check["test"]) <= available, (name, check["test"])


@pytest.mark.parametrize("dockerfile", ["services/api/Dockerfile", "services/gateway/Dockerfile"])
def test_image_healthchecks_match_compose_and_their_image(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    exec_form = json.loads(
        re.search(r"^\s*CMD (\[.*\])\s*$", text.split("HEALTHCHECK", 1)[1], re.M).group(1)
    )  # type: ignore[union-attr]
    service = SERVICES["api-1" if "api" in dockerfile else "gateway"]
    assert ["CMD", *exec_form] == service["healthcheck"]["test"]
    assert healthcheck_commands(["CMD", *exec_form]) <= IMAGE_COMMANDS[base_image(service)]


def test_only_the_gateway_publishes_a_port() -> None:
    published = {n for n, s in SERVICES.items() if s.get("ports")}
    assert published == {"gateway"}
    assert interpolate(SERVICES["gateway"]["ports"], {}) == ["8080:8080"]
    assert all("expose" not in s for s in SERVICES.values())


def test_the_ops_override_publishes_only_on_loopback() -> None:
    ops = yaml.safe_load((ROOT / "docker-compose.ops.yml").read_text())["services"]
    assert set(ops) <= set(SERVICES)
    for service in ops.values():
        assert all(port.startswith("127.0.0.1:") for port in service["ports"])


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned(name: str) -> None:
    image = SERVICES[name]["image"]
    repo, _, tag = image.rpartition(":")
    assert repo and tag and tag != "latest", image
    assert re.match(r"^v?\d+\.\d+\.\d+", tag), image


@pytest.mark.parametrize(
    "dockerfile",
    sorted(str(p.relative_to(ROOT)) for p in (ROOT / "services").glob("*/*Dockerfile")),
)
def test_dockerfile_base_images_are_pinned(dockerfile: str) -> None:
    for image in re.findall(r"^FROM (\S+)", (ROOT / dockerfile).read_text(), re.M):
        if image in {"build", "models", "exporter"}:
            continue  # an earlier stage
        assert re.search(r":v?\d+\.\d+\.\d+", image), (dockerfile, image)


def test_replicas_wait_for_init_and_redis_and_report_ready_after_model_load() -> None:
    for name in REPLICAS:
        api = SERVICES[name]
        assert api["hostname"] == name
        assert api["depends_on"] == {
            "init": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
            "features": {"condition": "service_completed_successfully"},
        }
        assert "/ready" in " ".join(api["healthcheck"]["test"])
        assert seconds(api["healthcheck"]["start_period"]) >= 30
        assert seconds(api["stop_grace_period"]) > graceful_timeout()


def test_every_depends_on_waits_for_health_or_completion() -> None:
    for name, service in SERVICES.items():
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in SERVICES, (name, dep)
            wanted = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert cond == {"condition": wanted}, (name, dep)


# ---- hardening and secrets --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_containers_are_locked_down(name: str) -> None:
    service = SERVICES[name]
    assert service["cap_drop"] == ["ALL"] and "cap_add" not in service
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["read_only"] is True
    assert service.get("privileged") is not True
    assert re.fullmatch(r"\d+[mg]", service["mem_limit"]) and 0 < service["pids_limit"] <= 256


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_containers_are_not_root(name: str) -> None:
    service = SERVICES[name]
    user = service.get("user") or dockerfile_user(service) or IMAGE_USER.get(base_image(service))
    assert user is not None, name
    assert user.split(":")[0] not in {"0", "root"}, (name, user)


def test_only_init_runs_as_root_and_it_has_no_network() -> None:
    init = SERVICES["init"]
    assert init["user"] == "0:0" and init["network_mode"] == "none"
    assert init["restart"] == "no" and "healthcheck" not in init


def test_features_loads_the_shipped_files_of_the_replicas_models_once() -> None:
    """The one-shot ``features`` runs what ``modelgate stack up`` runs, on the api image,
    against the replicas' model repository and Redis; the models overlay mounts your
    repository on it as on the replicas."""
    features, api = SERVICES["features"], SERVICES["api-1"]
    assert features["image"] == api["image"] and features["build"] == api["build"]
    assert features["command"] == ["modelgate", "features", "load-shipped"]
    for key in (
        "MODELGATE_MODEL_REPOSITORY",
        "MODELGATE_REDIS_URL",
        "MODELGATE_REDIS_PASSWORD_FILE",
    ):
        assert features["environment"][key] == api["environment"][key], key
    assert features["restart"] == "no" and features["healthcheck"] == {"disable": True}
    assert features["depends_on"] == {"redis": {"condition": "service_healthy"}}
    overlay = yaml.safe_load((ROOT / "docker-compose.models.yml").read_text())["services"]
    assert overlay["features"]["volumes"] == overlay["api-1"]["volumes"]


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [str(k), *strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [str(value)]


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_no_password_has_a_default_or_reaches_a_command_line(file: str) -> None:
    compose = yaml.safe_load((ROOT / file).read_text())
    text = " ".join(strings(compose))
    assert "change-me" not in text and "requirepass" not in text
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert key.endswith("_FILE"), (name, key, value)
        argv = strings([service.get("command", []), service.get("entrypoint", [])])
        assert not any(re.search(r"pass|auth|-a$", a, re.I) for a in argv), (name, argv)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's volumes."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def file_in_volume(service: dict[str, Any], path: str) -> str:
    """The named volume that holds ``path`` in this service's container."""
    for target, source in mounts(service).items():
        if path.startswith(target + "/"):
            return source
    raise AssertionError(f"{path} is on no volume")


def test_every_password_file_comes_from_the_init_volumes() -> None:
    init_volumes = mounts(SERVICES["init"])
    script = (ROOT / "deploy/compose/init-secrets.sh").read_text()
    wanted = {
        ("api-1", "MODELGATE_REDIS_PASSWORD_FILE"),
        ("redis-exporter", "REDIS_PASSWORD_FILE"),
        ("grafana", "GF_SECURITY_ADMIN_PASSWORD__FILE"),
    }
    for name, key in wanted:
        path = SERVICES[name]["environment"][key]
        volume = file_in_volume(SERVICES[name], path)
        # init mounts the same volume at the same place, and writes that file
        assert init_volumes.get(path.rsplit("/", 1)[0]) == volume, (name, path)
        assert path.rsplit("/", 1)[1] in script, path
    # Redis reads requirepass from the auth.conf that init writes beside the password
    conf = (ROOT / "infra/redis/redis.conf").read_text()
    include = re.search(r"^include (\S+)$", conf, re.M).group(1)  # type: ignore[union-attr]
    assert file_in_volume(SERVICES["redis"], include) == "redis-secrets"
    assert (
        mounts(SERVICES["redis"])["/usr/local/etc/redis/redis.conf"] == "./infra/redis/redis.conf"
    )
    assert SERVICES["redis"]["command"] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    # and only the services that need a secret mount it
    for name, service in SERVICES.items():
        sources = set(mounts(service).values())
        if "grafana-secrets" in sources:
            assert name in {"init", "grafana"}, name
        if "redis-secrets" in sources:
            assert name in {"init", "features", "redis", "redis-exporter", *REPLICAS}, name


def test_the_redis_exporter_reads_its_password_from_the_file() -> None:
    entry = (ROOT / "services/exporters/redis-exporter-entrypoint.sh").read_text()
    assert (
        'REDIS_PASSWORD="$(cat "$REDIS_PASSWORD_FILE")"' in entry
        and "export REDIS_PASSWORD" in entry
    )
    assert "redis-exporter-entrypoint" in (ROOT / "services/exporters/redis.Dockerfile").read_text()


# ---- the gateway and the images -----------------------------------------------------------


def test_gateway_env_renders_the_template_completely() -> None:
    env = {k: str(v) for k, v in interpolate(SERVICES["gateway"]["environment"], {}).items()}
    template = (ROOT / "infra/nginx/templates/default.conf.template").read_text()
    rendered = render(template, env)
    assert "${" not in rendered
    assert "server api-2:8000 max_fails=3" in rendered
    assert "$request_id" in rendered  # nginx's own variables untouched


def test_render_refuses_missing_values() -> None:
    with pytest.raises(RenderError, match="API_3"):
        render("server ${API_3};", {})
    with pytest.raises(RenderError, match="exactly three"):
        gateway_values(listen="1", status_listen="2", upstreams=["a"], access_log="off")


def test_api_image_is_multi_stage_non_root_cpu_torch_from_the_lock() -> None:
    text = (ROOT / "services/api/Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(froms) >= 2
    assert "--require-hashes" in text and "requirements.lock" in text
    assert "download.pytorch.org/whl/cpu" in text
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert "modelgate.app:create_app()" in final
    assert "scikit-learn" not in final


def test_gateway_image_runs_nginx_unprivileged() -> None:
    text = (ROOT / "services/gateway/Dockerfile").read_text()
    assert re.search(r"^FROM nginx:\d+\.\d+\.\d+", text, re.M)
    assert "COPY infra/nginx/templates/ /etc/nginx/templates/" in text
    assert re.search(r"^USER 101:101$", text, re.M)
    # what nginx writes as uid 101 is a tmpfs in compose (the root filesystem is read-only)
    tmpfs = set(SERVICES["gateway"]["tmpfs"])
    assert {"/tmp", "/var/cache/nginx", "/etc/nginx/conf.d"} <= tmpfs
    assert "pid /tmp/nginx.pid;" in text


def test_the_init_script_is_valid_sh() -> None:
    subprocess.run(["sh", "-n", str(ROOT / "deploy/compose/init-secrets.sh")], check=True)
    subprocess.run(
        ["sh", "-n", str(ROOT / "services/exporters/redis-exporter-entrypoint.sh")], check=True
    )


def test_redis_conf_is_complete() -> None:
    conf = (ROOT / "infra/redis/redis.conf").read_text()
    for line in ('save ""', "appendonly no", "maxmemory-policy volatile-lru", "port 6379"):
        assert re.search(rf"^{re.escape(line)}$", conf, re.M), line


def test_the_readme_names_every_compose_file() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in COMPOSE_FILES:
        assert name in readme, name
    assert Path(ROOT / ".env.example").is_file() and ".env.example" in readme
