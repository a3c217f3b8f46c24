"""Issue 18, tried as an attacker would, against a real replica (gunicorn, 2 workers) with
a real Redis and an admin key: every case answers its 4xx with the protocol's error
shape, no payload's marker file ever appears, /health stays 200, and the replica's
metrics count no 5xx at the end (the last test)."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    RedisServer,
    Server,
    add_version,
    start_redis,
    start_replica,
    stop_process,
)
from tests.integration.test_api import CHURN
from tests.unit.test_archive import edit, pickled, with_program

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": "adversary-admin"}
CHURN_ROW = list(CHURN.values())


@pytest.fixture(scope="module")
def redis_module() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    stop_process(server.proc)


@pytest.fixture(scope="module")
def repo(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models, and next to them (outside the repository) a copy of iris."""
    base = tmp_path_factory.mktemp("adversarial")
    shutil.copytree(demo_models, base / "models", ignore=shutil.ignore_patterns(".built"))
    shutil.copytree(demo_models / "iris", base / "outside" / "iris")
    # Refused at boot by every worker (its sha256 doesn't match): a known load failure.
    add_version(base / "models", "churn", "2", "3", data=b"truncated")
    return base / "models"


@pytest.fixture(scope="module")
def markers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def replica(
    repo: Path, redis_module: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {
        "MODELGATE_REDIS_URL": redis_module.url,
        "MODELGATE_AUTH__ADMIN_KEY_SHA256": hashlib.sha256(b"adversary-admin").hexdigest(),
        "MODELGATE_INSTANCE": "adversarial",
    }
    server = start_replica(repo, tmp_path_factory.mktemp("logs"), workers=2, env=env)
    yield server
    stop_process(server.proc)


@pytest.fixture
def c(replica: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=replica.url, timeout=30) as client:
        yield client


def healthy(c: httpx.Client) -> None:
    for path in ("/health", "/models", "/v1/models/iris", "/v2/models/iris", "/models/churn"):
        r = c.get(path)
        assert r.status_code == 200, (path, r.text)


def default_churn(c: httpx.Client) -> str:
    return str(c.get("/models/churn").json()["default_version"])


def install(repo: Path, version: str, data: bytes) -> None:
    """churn/<version>: churn v2's manifest with ``data`` as its model file, sha matching."""
    manifest = json.loads((repo / "churn" / "2" / "model.json").read_text())
    target = repo / "churn" / version
    target.mkdir()
    (target / "model.pt2").write_bytes(data)
    manifest.update(version=version, sha256=hashlib.sha256(data).hexdigest())
    (target / "model.json").write_text(json.dumps(manifest))


# --- 1. model archives -------------------------------------------------------------------


def evasions(pt2: Path, marker: Path) -> dict[str, bytes]:
    def case_variant(n: str, d: bytes) -> list[tuple[str, bytes]]:
        if n.endswith("data/sample_inputs/model.pt"):
            return [(n.replace("sample_inputs", "SAMPLE_INPUTS"), pickled(marker))]
        return [(n, d)]

    def duplicate(n: str, d: bytes) -> list[tuple[str, bytes]]:
        if n.endswith("data/sample_inputs/model.pt"):
            return [(n, pickled(marker)), (n, d)]
        return [(n, d)]

    touch = f"__import__('pathlib').Path({str(marker)!r}).touch()"

    def sympy(program: dict[str, Any]) -> None:
        text = json.dumps(program).replace('"Symbol(', json.dumps(touch + " or ")[:-1] + "Symbol(")
        program.clear()
        program.update(json.loads(text))

    return {
        "11": edit(pt2, case_variant),
        "12": edit(pt2, duplicate),
        "13": with_program(pt2, lambda p: p.update(guards_code=[f"{touch} is None"])),
        "14": with_program(pt2, sympy),
    }


def test_archive_evasions_are_refused_on_load_and_run_nothing(
    c: httpx.Client, repo: Path, markers: Path
) -> None:
    marker = markers / "archive"
    for version, data in evasions(repo / "churn" / "2" / "model.pt2", marker).items():
        install(repo, version, data)
        r = c.post("/admin/models/churn/load", json={"version": version}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["error"] == "model_refused", (version, r.text)
        v2 = c.post(
            "/v2/repository/models/churn/load",
            json={"parameters": {"version": version}},
            headers=ADMIN,
        )
        assert v2.status_code == 400 and set(v2.json()) == {"error"}, (version, v2.text)
        assert not marker.exists(), version
        assert default_churn(c) == "2"
    healthy(c)


# --- 2. names, versions, paths -----------------------------------------------------------


def test_traversal_and_odd_versions_are_refused_and_nothing_breaks(
    c: httpx.Client, repo: Path
) -> None:
    outside = {"parameters": {"version": "../../../outside/iris/1"}}
    r = c.post("/v2/repository/models/iris/load", json=outside, headers=ADMIN)
    assert r.status_code == 400 and "version" in r.json()["error"], r.text
    for version in ("²", "01", "2.0", "../x/1", "", " 1", "1\n", True, -1, [1]):
        r = c.post("/admin/models/churn/load", json={"version": version}, headers=ADMIN)
        assert r.status_code == 422, (version, r.text)
        assert r.json()["errors"][0]["field"] == "version", r.text
    for name in ("Churn", "-churn", ".hidden", "x" * 65):
        r = c.post(f"/admin/models/{name}/load", json={"version": "1"}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "name", (name, r.text)
    # A version directory that is a symlink out of the repository is refused.
    (repo / "churn" / "7").symlink_to(repo.parent / "outside" / "iris" / "1")
    r = c.post("/admin/models/churn/load", json={"version": "7"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"] == "model_refused", r.text
    assert "leaves the repository" in r.json()["message"]
    assert default_churn(c) == "2"
    healthy(c)


# --- 3. the control stream ---------------------------------------------------------------


def test_garbage_on_the_control_stream_is_skipped_and_the_fleet_still_follows(
    c: httpx.Client, repo: Path, redis_module: RedisServer, tmp_path: Path
) -> None:
    def command(**fields: Any) -> bytes:
        base = {"action": "load", "model": "churn", "version": "1", "origin": "x", "issued_at": "t"}
        return json.dumps({**base, **fields}).encode()

    garbage: list[dict[bytes, bytes]] = [
        {b"command": b"\xff\xfe\x00garbage"},
        {b"command": command(version=None)},
        {b"command": command(model=["churn"])},
        {b"command": command(model="")},
        {b"command": command(version="../../../outside/iris/1")},
        {b"command": command(action="rm -rf")},
        {b"command": b"[]"},
        {b"command": command(), b"extra": b"1"},
    ]
    with redis.Redis.from_url(redis_module.url) as r:
        for fields in garbage:
            r.xadd("modelgate:control", fields)  # type: ignore[arg-type]
    # The follower survived: a real command still reaches this replica's workers.
    ok = c.post("/admin/models/churn/load", json={"version": "1"}, headers=ADMIN)
    assert ok.status_code == 200 and ok.json()["applied_here"] is True, ok.text
    control = c.get("/health").json()["control"]
    assert control["following"] is True and control["skipped_commands"] >= len(garbage)
    # A worker booting with all that in the stream replays it and starts.
    late = start_replica(
        repo,
        tmp_path,
        workers=1,
        env={"MODELGATE_REDIS_URL": redis_module.url, "MODELGATE_INSTANCE": "late"},
    )
    try:
        assert httpx.get(f"{late.url}/models/churn").json()["default_version"] == "1"
        assert "Traceback" not in late.log()
    finally:
        stop_process(late.proc)
    back = c.post("/admin/models/churn/load", json={"version": "2"}, headers=ADMIN)
    assert back.status_code == 200
    healthy(c)


# --- 5. sizes before work ----------------------------------------------------------------


def test_oversized_row_counts_are_refused_before_rows_are_built(c: httpx.Client) -> None:
    health: list[int] = []
    # Under the 4 MiB body cap, far over max_batch_instances (1000).
    native = json.dumps({"instances": [CHURN_ROW] * 60_000})
    columnar = json.dumps({"inputs": {name: [value] * 50_000 for name, value in CHURN.items()}})
    rows = json.dumps({"instances": [CHURN] * 15_000})
    assert all(len(body) < 4 * 1024 * 1024 for body in (native, columnar, rows))
    done = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=c.base_url, timeout=30) as h:
            while not done.is_set():
                health.append(h.get("/health").status_code)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = c.post("/predict/batch", content=native)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "instances", r.text
        r = c.post("/v1/models/churn:predict", content=columnar)
        assert r.status_code == 400 and "per column" in r.json()["error"], r.text[:300]
        r = c.post("/v1/models/churn:predict", content=rows)
        assert r.status_code == 400 and "at most" in r.json()["error"], r.text[:300]
    finally:
        done.set()
        watcher.join()
    assert health and set(health) == {200}


# --- 6. no input produces a 500 ----------------------------------------------------------


def v2_tensor(**over: Any) -> dict[str, Any]:
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 10], "data": CHURN_ROW}
    return {"inputs": [{**tensor, **over}]}


def v2_body(top: dict[str, Any] | None = None, **over: Any) -> bytes:
    return json.dumps({**v2_tensor(**over), **(top or {})}).encode()


HUGE = 10**400
SUPERSCRIPT_2 = "²".encode("latin-1")  # str.isdigit() is true for it; int() refuses it
BAD_OUTPUTS = {"outputs": [{"name": "probability", "parameters": [1]}]}
V2_BAD: list[tuple[str, dict[str, bytes], bytes]] = [
    ("header length non-ASCII digit", {"Inference-Header-Content-Length": SUPERSCRIPT_2}, b"{}"),
    ("header length huge", {"Inference-Header-Content-Length": b"9" * 5000}, b"{}"),
    ("header length past body", {"Inference-Header-Content-Length": b"99"}, b"{}"),
    ("parameters a list", {}, v2_body({"parameters": [1]})),
    ("tensor parameters a string", {}, v2_body(parameters="x")),
    ("output parameters a list", {}, v2_body(BAD_OUTPUTS)),
    ("400-digit integer", {}, v2_body(data=[HUGE, *CHURN_ROW[1:]])),
    ("strings for FP32", {}, v2_body(data=["35", *CHURN_ROW[1:]])),
    ("booleans for FP32", {}, v2_body(data=[CHURN_ROW[0], True, *CHURN_ROW[2:]])),
    ("lying binary_data_size", {}, v2_body(data=None, parameters={"binary_data_size": 10**12})),
    ("negative shape", {}, v2_body(shape=[-1, 10])),
    ("huge shape", {}, v2_body(shape=[2**62, 10])),
    ("zero rows", {}, v2_body(shape=[0, 10], data=[])),
    ("deep data", {}, v2_body(data=[[[1.0] * 10]])),
]  # fmt: skip


@pytest.mark.parametrize(("case", "headers", "body"), V2_BAD, ids=[c[0] for c in V2_BAD])
def test_v2_bad_inputs_are_400(
    c: httpx.Client, case: str, headers: dict[str, bytes], body: bytes
) -> None:
    r = c.post("/v2/models/churn/infer", content=body, headers=headers)
    assert r.status_code == 400 and set(r.json()) == {"error"}, (case, r.text)


def test_v1_and_native_odd_bodies_are_4xx(c: httpx.Client) -> None:
    cases = [
        ("/v1/models/churn:predict", {"instances": [[HUGE, *CHURN_ROW[1:]]]}),
        ("/v1/models/churn:predict", {"inputs": {"age": "x"}}),
        ("/v1/models/churn:predict", {"instances": "nope"}),
        ("/predict/batch", {"instances": [[HUGE, *CHURN_ROW[1:]]]}),
        ("/predict", {"features": {**CHURN, "age": HUGE}}),
    ]
    for path, body in cases:
        r = c.post(path, content=json.dumps(body))
        assert 400 <= r.status_code < 500, (path, body, r.text)


def test_no_redirect_to_the_clients_host_and_request_id_is_whole(c: httpx.Client) -> None:
    r = c.get("/health/", headers={"Host": "evil.example"})
    assert r.status_code == 404 and "location" not in r.headers
    r = c.get("/health", headers={"X-Request-ID": "ok-id; rm -rf"})
    assert r.headers["x-request-id"] != "ok-id; rm -rf"


def test_client_disconnect_mid_body_is_not_a_server_error(replica: Server) -> None:
    with socket.create_connection(("127.0.0.1", replica.port), timeout=5) as s:
        s.sendall(
            b"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n" + b'{"instances": [' * 10
        )
    with httpx.Client(base_url=replica.url, timeout=10) as c:
        healthy(c)


# --- 8. admin surface --------------------------------------------------------------------


def test_repository_index_is_admin_only_and_health_shows_counts(c: httpx.Client) -> None:
    assert c.post("/v2/repository/index").status_code == 401
    index = c.post("/v2/repository/index", headers=ADMIN).json()
    refused = {(m["name"], m["version"]): m for m in index if m["state"] != "READY"}
    assert "sha256 mismatch" in refused[("churn", "3")]["reason"]  # admin callers see why
    assert "reason" in refused[("churn", "11")]
    body = c.get("/health").json()
    assert isinstance(body["load_failures"], int) and body["load_failures"] >= 1
    assert "sha256" not in json.dumps(body) and "reason" not in json.dumps(body)


# --- last: what the replica counted ------------------------------------------------------


def test_zz_the_replica_counted_no_server_error(c: httpx.Client, markers: Path) -> None:
    healthy(c)
    assert not any(markers.iterdir())
    samples = [
        s
        for family in text_string_to_metric_families(c.get("/metrics").text)
        for s in family.samples
        if s.name.endswith("http_requests_total")
    ]
    assert samples
    assert sum(s.value for s in samples if s.labels.get("status") == "5xx") == 0, [
        s for s in samples if s.labels.get("status") == "5xx"
    ]
