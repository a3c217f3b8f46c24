"""The native stack: what ``docker compose up`` runs, as local processes on loopback.

``modelgate stack up`` starts redis-server, three replicas (``modelgate serve``), nginx as
the gateway, the exporters (one counts the gateway's answers from its metrics log),
alertmanager and prometheus, each waited on until it answers, from the same files under
``infra/`` that compose uses (rendered for 127.0.0.1 and this stack's ports). In the
foreground it stays until Ctrl-C or until a process dies, then stops everything it
started; with ``--detach`` it returns and ``modelgate stack down`` stops it later. Every
PID is recorded in ``<dir>/stack.json``; nothing is ever stopped by name.

Each process runs in its own session, so Ctrl-C reaches only this supervisor, which then
stops the others in reverse order: prometheus, the gateway (no new requests), the
replicas (which finish what is in flight), and Redis last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelgate.stack.config import StackConfig
from modelgate.stack.infra import gateway_values, render_native_gateway

STATE_FILE = "stack.json"
REDIS_PASSWORD_FILE = "redis.password"  # noqa: S105 - a file name; 0600, in the stack's dir
REDIS_CONF_FILE = "redis.conf"  # holds requirepass, so the password is never in argv
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


# --- readiness probes -------------------------------------------------------------------


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL
            return int(response.status) == 200
    except OSError:
        return False


def redis_ok(host: str, port: int, password: str | None = None) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            if password is not None:
                secret = password.encode()
                s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret))
                if not s.recv(16).startswith(b"+OK"):
                    return False
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --- the stack's Redis password -------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with a file only this user can read, 0600 from its creation (never
    briefly world-readable, whatever the umask)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def redis_password(config: StackConfig) -> str:
    """This stack's Redis password: generated once per stack directory, kept in a 0600
    file that replicas read (MODELGATE_REDIS_PASSWORD_FILE), and given to redis-server in
    a 0600 config file, so it never appears on a command line."""
    path = config.dir / REDIS_PASSWORD_FILE
    if path.exists():
        return path.read_text().strip()
    config.dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(32)
    _write_private(path, password + "\n")
    return password


def redis_conf(config: StackConfig) -> Path:
    path = config.dir / REDIS_CONF_FILE
    _write_private(path, f"requirepass {redis_password(config)}\n")
    return path


def port_free(host: str, port: int) -> bool:
    """Nothing listens there. (SO_REUSEADDR as the servers use it: connections of a stack
    that just stopped linger in TIME_WAIT but don't stop a new one from listening.)"""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def which(program: str) -> str:
    found = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.access(p, os.X_OK)),
        None,
    )
    if found is None:
        raise StackError(f"{program} is not installed (make run installs it with apt-get)")
    return found


class StackError(RuntimeError):
    pass


# --- what runs ----------------------------------------------------------------------------


def render_prometheus(config: StackConfig) -> Path:
    """infra/prometheus/prometheus.yml with compose's service names mapped to loopback."""
    source = yaml.safe_load((config.infra / "prometheus" / "prometheus.yml").read_text())
    h = config.host
    targets = {f"api-{i}:8000": f"{h}:{p}" for i, p in enumerate(config.replica_ports, 1)}
    targets["nginx-exporter:9113"] = f"{h}:{config.nginx_exporter_port}"
    targets["redis-exporter:9121"] = f"{h}:{config.redis_exporter_port}"
    targets["gateway-log-exporter:3903"] = f"{h}:{config.gateway_log_exporter_port}"
    targets["alertmanager:9093"] = f"{h}:{config.alertmanager_port}"
    targets["localhost:9090"] = f"{h}:{config.prometheus_port}"
    alerting = source.get("alerting", {}).get("alertmanagers", [])
    for job in [*source.get("scrape_configs", []), *alerting]:
        for static in job.get("static_configs", []):
            static["targets"] = [targets.get(t, t) for t in static["targets"]]
    if config.scrape_interval:
        source["global"]["scrape_interval"] = config.scrape_interval
        source["global"]["evaluation_interval"] = config.scrape_interval
    source["rule_files"] = [str(p) for p in _render_rules(config, source.get("rule_files", []))]
    out = config.dir / "prometheus.yml"
    out.write_text(yaml.safe_dump(source, sort_keys=False))
    return out


def _render_rules(config: StackConfig, names: list[str]) -> list[Path]:
    """The rule files, from infra/ as they are, or copies whose alerts wait ``alert_for``
    (a test's "0s") instead of their own ``for:``."""
    sources = [config.infra / "prometheus" / name for name in names]
    if not config.alert_for:
        return sources
    out_dir = config.dir / "prometheus-rules"
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = []
    for source in sources:
        rules = yaml.safe_load(source.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = config.alert_for
        out = out_dir / source.name
        out.write_text(yaml.safe_dump(rules, sort_keys=False))
        rendered.append(out)
    return rendered


def render_alertmanager(config: StackConfig) -> Path:
    """infra/alertmanager/alertmanager.yml with this stack's webhook (if any) as its
    receiver; compose's entrypoint adds ALERTMANAGER_WEBHOOK_URL the same way."""
    source = yaml.safe_load((config.infra / "alertmanager" / "alertmanager.yml").read_text())
    if config.alert_webhook_url:
        [receiver] = [r for r in source["receivers"] if r["name"] == source["route"]["receiver"]]
        receiver["webhook_configs"] = [{"url": config.alert_webhook_url, "send_resolved": True}]
    if config.alert_group_wait:
        source["route"]["group_wait"] = config.alert_group_wait
    out = config.dir / "alertmanager.yml"
    out.write_text(yaml.safe_dump(source, sort_keys=False))
    return out


def replica_env(config: StackConfig, instance: str) -> dict[str, str]:
    """What compose sets for each api service; the caller's MODELGATE_* settings win."""
    defaults = {
        "MODELGATE_REDIS_URL": config.redis_url,
        "MODELGATE_REDIS_PASSWORD_FILE": str(config.dir / REDIS_PASSWORD_FILE),
        "MODELGATE_CACHE__ENABLED": "true",
        "MODELGATE_RATE_LIMIT__ENABLED": "true",
        "MODELGATE_TRUSTED_PROXIES": config.host,
        "MODELGATE_PREDICTION_LOG__DIR": str(config.dir / "predictions"),
        "MODELGATE_STATS__PROMETHEUS_URL": config.url(config.prometheus_port),
    }
    return {**defaults, **os.environ, "MODELGATE_INSTANCE": instance}


def probes(config: StackConfig) -> dict[str, tuple[Callable[[], bool], str]]:
    """How to tell each service is ready, and its address: for ``up`` and ``status``."""
    h = config.host
    table: dict[str, tuple[Callable[[], bool], str]] = {
        "redis": (lambda: redis_ok(h, config.redis_port, redis_password(config)), config.redis_url)
    }
    for i, port in enumerate(config.replica_ports, 1):
        url = config.url(port)
        table[f"api-{i}"] = (lambda u=url: http_ok(f"{u}/ready"), url)  # type: ignore[misc]
    # Ready through the gateway means: nginx answers and reaches a ready replica.
    table["gateway"] = (lambda: http_ok(f"{config.gateway_url}/ready"), config.gateway_url)
    prom = config.url(config.prometheus_port)
    table["prometheus"] = (lambda: http_ok(f"{prom}/-/ready"), prom)
    alertmanager = config.url(config.alertmanager_port)
    table["alertmanager"] = (lambda: http_ok(f"{alertmanager}/-/ready"), alertmanager)
    for name, port in (
        ("nginx-exporter", config.nginx_exporter_port),
        ("redis-exporter", config.redis_exporter_port),
        ("gateway-log-exporter", config.gateway_log_exporter_port),
    ):
        url = config.url(port)
        table[name] = (lambda u=url: http_ok(f"{u}/metrics"), url)  # type: ignore[misc]
    table["supervisor"] = (lambda: _supervisor_answers(config), str(config.dir))
    return table


def _supervisor_answers(config: StackConfig) -> bool:
    from modelgate.stack.supervisor import supervisor_ok  # supervisor.py builds on this module

    return supervisor_ok(config)


def render_gateway(config: StackConfig, out_dir: Path) -> Path:
    """infra/nginx rendered for this stack into ``out_dir``; returns the main config."""
    h = config.host
    values = gateway_values(
        listen=f"{h}:{config.gateway_port}",
        status_listen=f"{h}:{config.gateway_status_port}",
        upstreams=[f"{h}:{p}" for p in config.replica_ports],
        access_log=str(config.dir / "logs" / "gateway-access.log"),
        metrics_log=f"syslog:server={h}:{config.gateway_log_port},nohostname,tag=modelgate",
        req_per_ip=config.gateway_req_per_ip,
        req_burst=config.gateway_req_burst,
        trace_sample_percent=config.gateway_trace_sample_percent,
    )
    return render_native_gateway(config.infra, out_dir, values)


def commands(config: StackConfig) -> list[tuple[str, list[str], dict[str, str]]]:
    """Everything the stack runs, in start order: name, argv, environment (empty: ours)."""
    logs = config.dir / "logs"
    h = config.host
    redis = [
        which("redis-server"), str(redis_conf(config)),
        "--bind", h, "--port", str(config.redis_port),
        "--save", "", "--appendonly", "no", "--dir", str(config.dir),
        # Only keys with a TTL (cache entries, quota windows) may be evicted: never the
        # model-control stream.
        "--maxmemory", "256mb", "--maxmemory-policy", "volatile-lru",
        "--logfile", str(logs / "redis.log"),
    ]  # fmt: skip
    serve = [str(Path(sys.executable).with_name("modelgate")), "serve", "--host", h]
    serve += ["--model-repository", str(config.model_repository)]
    serve += ["--workers", str(config.workers)]
    replicas = [
        (f"api-{i}", [*serve, "--port", str(port)], replica_env(config, f"api-{i}"))
        for i, port in enumerate(config.replica_ports, 1)
    ]
    nginx_conf = render_gateway(config, config.dir / "nginx")
    gateway = [which("nginx"), "-c", str(nginx_conf), "-e", str(logs / "gateway-error.log")]
    prometheus = [
        which("prometheus"),
        f"--config.file={render_prometheus(config)}",
        f"--storage.tsdb.path={config.dir / 'prometheus-data'}",
        f"--web.listen-address={h}:{config.prometheus_port}",
        "--storage.tsdb.retention.time=2d",
    ]
    redis_exporter = [
        which("prometheus-redis-exporter"),
        f"-redis.addr=redis://{h}:{config.redis_port}",
        f"-web.listen-address={h}:{config.redis_exporter_port}",
    ]
    nginx_exporter = [
        which("prometheus-nginx-exporter"),
        f"-nginx.scrape-uri=http://{h}:{config.gateway_status_port}/stub_status",
        f"-web.listen-address={h}:{config.nginx_exporter_port}",
    ]
    gateway_log_exporter = [
        str(Path(sys.executable).with_name("modelgate")),
        "gateway-exporter",
        f"--udp={h}:{config.gateway_log_port}",
        f"--listen={h}:{config.gateway_log_exporter_port}",
    ]
    alertmanager = [
        which("prometheus-alertmanager"),
        f"--config.file={render_alertmanager(config)}",
        f"--storage.path={config.dir / 'alertmanager-data'}",
        f"--web.listen-address={h}:{config.alertmanager_port}",
        # One Alertmanager, no cluster: the default would also listen on 0.0.0.0:9094.
        "--cluster.listen-address=",
    ]
    return [
        ("redis", redis, {}),
        # The exporter reads REDIS_PASSWORD from its environment (not argv).
        (
            "redis-exporter",
            redis_exporter,
            {**os.environ, "REDIS_PASSWORD": redis_password(config)},
        ),
        *replicas,
        # Before the gateway, so that its first answers are counted.
        ("gateway-log-exporter", gateway_log_exporter, {}),
        ("gateway", gateway, {}),
        ("nginx-exporter", nginx_exporter, {}),
        # Before prometheus, which sends it alerts from its first evaluation.
        ("alertmanager", alertmanager, {}),
        ("prometheus", prometheus, {}),
    ]


# --- starting and stopping ----------------------------------------------------------------


def _wait_ready(
    name: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise StackError(f"{name} exited with {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise StackError(f"{name} not ready after {START_TIMEOUT_S:.0f}s")
        time.sleep(0.1)  # polling interval


def live_stat(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (the state first), or
    None if there is no such process or it has exited (a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else fields


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if there is no such process.
    Together with the PID it names one process: a reused PID has another start time.
    (Names don't work: redis, nginx and gunicorn all rewrite their command lines.)"""
    fields = live_stat(pid)
    return int(fields[19]) if fields else None


def _alive(pid: int, started: int) -> bool:
    return start_ticks(pid) == started


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (each service runs in its own session)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = live_stat(entry.name)
        if fields and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def stop_pid(pid: int, started: int, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait, then SIGKILL: by PID only, and only if it is still ours. Then the
    rest of its process group (workers), so that nothing outlives ``down``. Once the
    leader was seen to be ours, its number is not reused while any process is in group
    ``pid``, so every member found afterwards is one we started.

    A PID whose start time no longer matches the recorded one is not ours any more (it
    exited, and the number may now be someone else's or lead someone else's group): it
    and its group get no signal at all."""
    if not _alive(pid, started):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid, started):
        with_child_reaped(pid)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline += timeout
        time.sleep(0.05)  # polling interval
    with_child_reaped(pid)
    termed: set[int] = set()
    deadline = time.monotonic() + 10
    while members := group_members(pid):
        late = time.monotonic() > deadline
        for member in members:
            if late or member not in termed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member, signal.SIGKILL if late else signal.SIGTERM)
                termed.add(member)
        time.sleep(0.1)  # polling interval


def with_child_reaped(pid: int) -> None:
    """Reap ``pid`` if it is our child and has exited (else it lingers as a zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@dataclass
class Running:
    name: str
    pid: int
    started: int  # start time in clock ticks, see start_ticks
    url: str


def read_state(config: StackConfig) -> list[Running]:
    path = config.dir / STATE_FILE
    if not path.exists():
        return []
    raw: dict[str, Any] = json.loads(path.read_text())
    return [Running(**p) for p in raw["processes"]]


def write_state(config: StackConfig, running: list[Running]) -> None:
    """Replace ``stack.json`` whole: readers (``stack status``, the supervisor's clients,
    the fault suite) poll it while the supervisor restarts a process, and a file written
    in place can be read empty or half-written."""
    data = {"processes": [r.__dict__ for r in running], "gateway": config.gateway_url}
    path = config.dir / STATE_FILE
    temp = path.with_name(f".{STATE_FILE}.{os.getpid()}")
    temp.write_text(json.dumps(data, indent=2))
    os.replace(temp, path)


def stop_all(config: StackConfig, running: list[Running]) -> None:
    for r in reversed(running):
        stop_pid(r.pid, r.started)
    (config.dir / STATE_FILE).unlink(missing_ok=True)


def start_all(config: StackConfig) -> list[Running]:
    if any(_alive(r.pid, r.started) for r in read_state(config)):
        raise StackError(f"a stack already runs from {config.dir} (modelgate stack down)")
    busy = [p for p in config.all_ports() if not port_free(config.host, p)]
    if busy:
        raise StackError(f"ports in use on {config.host}: {busy} (another stack or server?)")
    if not config.model_repository.is_dir():
        raise StackError(f"no model repository at {config.model_repository} (make models)")
    (config.dir / "logs").mkdir(parents=True, exist_ok=True)
    running: list[Running] = []
    table = probes(config)
    try:
        for name, argv, env in commands(config):
            ready, url = table[name]
            launch(config, running, name, argv, env, ready, url)
            print(f"  {name:<11} ready  {url}", flush=True)  # noqa: T201
            if name == "redis":
                load_ranking_features(config)
    except BaseException:
        stop_all(config, running)
        raise
    return running


def load_ranking_features(config: StackConfig) -> None:
    """The feature files shipped with the repository's ranking models, into Redis before
    any replica starts, so a ranker answers from the first request (ranking/seed.py)."""
    import redis

    from modelgate.ranking import load, seed  # only here: the other commands don't need them
    from modelgate.settings import Settings

    url = Settings(
        redis_url=config.redis_url, redis_password_file=config.dir / REDIS_PASSWORD_FILE
    ).redis_connection_url
    try:
        with redis.Redis.from_url(url, socket_timeout=30) as client:
            outcomes = seed.load_shipped(client, config.model_repository)
    except (load.LoadError, redis.RedisError) as exc:
        raise StackError(f"ranking features: {exc}") from None
    for outcome in outcomes:
        print(f"  features    {outcome.line()}", flush=True)  # noqa: T201


def launch(
    config: StackConfig,
    running: list[Running],
    name: str,
    argv: list[str],
    env: dict[str, str],
    ready: Callable[[], bool],
    url: str,
) -> Running:
    """Start one process in its own session, record it in ``running`` (replacing an
    entry of the same name) and in the state file, and wait until it is ready. Used by
    ``up`` and by the supervisor's restarts."""
    log = config.dir / "logs" / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - our argv, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env or None,
            start_new_session=True,
        )
    started = Running(name, proc.pid, start_ticks(proc.pid) or -1, url)
    at = next((i for i, r in enumerate(running) if r.name == name), None)
    if at is None:
        running.append(started)
    else:
        running[at] = started
    write_state(config, running)
    _wait_ready(name, ready, proc, log)
    return started


def _banner(config: StackConfig) -> str:
    gw = config.gateway_url
    return (
        f"\nmodelgate is up. Gateway: {gw}\n"
        f"  try:        curl -s {gw}/models/churn/predict "
        f"-d '{{\"features\": [35,75000,680,24,730,85.5,2,false,2,3]}}'\n"
        f"  API docs:   {gw}/docs\n"
        f"  Prometheus: {config.url(config.prometheus_port)}\n"
        f"  Alerts:     {config.url(config.alertmanager_port)}"
        f" (webhook: {config.alert_webhook_url or 'none, MODELGATE_STACK_ALERT_WEBHOOK_URL'})\n"
        f"  logs:       {config.dir / 'logs'}\n"
    )


def up(config: StackConfig, detach: bool) -> int:
    print(f"starting the native stack from {config.dir}", flush=True)  # noqa: T201
    stop = threading.Event()
    # Until the supervisor decides, Ctrl-C and SIGTERM only ask it to stop.
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        running = start_all(config)
    except StackError as exc:
        sys.stderr.write(f"modelgate stack: {exc}\n")
        return 1
    from modelgate.stack import supervisor  # builds on this module

    if detach:
        try:
            supervisor.spawn(config)
        except StackError as exc:
            sys.stderr.write(f"modelgate stack: {exc}\n")
            stop_all(config, read_state(config))
            return 1
        print(_banner(config), flush=True)  # noqa: T201
        print("running in the background; stop it with: make down", flush=True)  # noqa: T201
        return 0
    print(_banner(config), flush=True)  # noqa: T201
    print("Ctrl-C stops every process of the stack.", flush=True)  # noqa: T201
    # This process supervises: dead replicas are started again; any other death stops all.
    keeper = supervisor.Supervisor(config, running)
    died = keeper.run(stop, stop_on_death=True)
    if died is not None:
        sys.stderr.write(f"modelgate stack: {died} exited; stopping\n")
    print("stopping…", flush=True)  # noqa: T201
    stop_all(config, keeper.running)
    return 1 if died is not None else 0


def down(config: StackConfig) -> int:
    running = read_state(config)
    if not running:
        print(f"no stack recorded in {config.dir}")  # noqa: T201
        return 0
    stop_all(config, running)
    print(f"stopped {len(running)} processes")  # noqa: T201
    return 0


def status(config: StackConfig) -> int:
    running = read_state(config)
    if not running:
        print(f"no stack recorded in {config.dir}")  # noqa: T201
        return 3
    table = probes(config)
    healthy = True
    for r in running:
        alive = _alive(r.pid, r.started)
        ready = alive and r.name in table and table[r.name][0]()
        healthy &= ready
        state = "ready" if ready else ("running, not ready" if alive else "not running")
        print(f"{r.name:<11} pid {r.pid:<8} {state:<19} {r.url}")  # noqa: T201
    return 0 if healthy else 1


def main(args: argparse.Namespace) -> int:
    config = StackConfig.from_env(args)
    if args.action == "up":
        return up(config, args.detach)
    if args.action == "down":
        return down(config)
    if args.action in ("restart", "reload", "supervise"):
        return operate(config, args)
    return status(config)


def operate(config: StackConfig, args: argparse.Namespace) -> int:
    """restart / reload go to the stack's supervisor (supervisor.py); supervise is it."""
    from modelgate.stack import supervisor

    def say(message: str) -> None:
        print(message, flush=True)  # noqa: T201

    if args.action == "supervise":
        return supervisor.supervise(config)
    if args.action == "reload":
        return supervisor.request(config, {"op": "reload"}, say)
    op = {"op": "restart", "name": args.name, "rolling": args.rolling}
    return supervisor.request(config, op, say)
