"""Keeping the native stack running, and changing it while it runs.

A replica that dies (OOM killer, SIGKILL, a crash) is started again by the stack's
supervisor, with a growing pause between tries of one that keeps dying (1 s … 30 s). In
the foreground the ``stack up`` process is the supervisor; ``up --detach`` leaves one
behind (``modelgate stack supervise``, recorded in ``stack.json`` as ``supervisor`` and
stopped first by ``down``). Any other process dying is reported, not restarted: in the
foreground it stops the stack as before; detached, ``status`` shows it and
``modelgate stack restart NAME`` starts it again.

Operators reach the supervisor through a Unix socket in the stack's directory
(``supervisor.sock``, mode 0600): ``modelgate stack restart [--rolling] [NAME]`` and
``modelgate stack reload``. Every change to the stack's processes runs on the
supervisor's main thread, one at a time, with the configuration the stack was started
with (an operator's shell need not have the same environment).

* restart: SIGTERM (the replica drains: its in-flight requests finish, its socket closes
  so the gateway sends new requests elsewhere), then start it again and wait for
  ``/ready``. ``--rolling`` does one replica at a time; without it every named process
  is stopped first, then all are started.
* reload: the gateway's configuration rendered again from ``infra/nginx``, checked with
  ``nginx -t`` in a scratch directory, and only then written in place and nginx sent
  SIGHUP: new workers take new connections, old ones finish what they hold.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from modelgate.stack.config import StackConfig
from modelgate.stack.launch import (
    Running,
    StackError,
    commands,
    launch,
    probes,
    read_state,
    render_gateway,
    start_ticks,
    stop_pid,
    with_child_reaped,
    write_state,
)

SOCKET = "supervisor.sock"
NAME = "supervisor"
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
CHECK_INTERVAL_S = 0.5
COMMAND_TIMEOUT_S = 600.0  # a rolling restart of three replicas takes well under this

Say = Callable[[str], None]


def is_replica(name: str) -> bool:
    return name.startswith("api-")


def socket_path(config: StackConfig) -> Path:
    return config.dir / SOCKET


def alive(r: Running) -> bool:
    return start_ticks(r.pid) == r.started


class Supervisor:
    """Owns the stack's process list after ``up``: restarts dead replicas, carries out
    the operators' restarts and reloads, and keeps ``stack.json`` up to date."""

    def __init__(self, config: StackConfig, running: list[Running]) -> None:
        self.config = config
        self.running = running
        self._argv = {name: (argv, env) for name, argv, env in commands(config)}
        self._probes = probes(config)
        self._tries: dict[str, int] = {}
        self._next_try: dict[str, float] = {}
        self._requests: queue.Queue[socket.socket] = queue.Queue()
        self._reported: set[str] = set()
        self.starting: str | None = None  # the process being started, if any

    # --- processes --------------------------------------------------------------------

    def _find(self, name: str) -> Running:
        found = next((r for r in self.running if r.name == name), None)
        if found is None:
            raise StackError(f"no process named {name!r} in this stack")
        return found

    def _stop(self, name: str) -> None:
        r = self._find(name)
        stop_pid(r.pid, r.started)

    def _start(self, name: str) -> Running:
        argv, env = self._argv[name]
        ready, url = self._probes[name]
        self.starting = name
        started = launch(self.config, self.running, name, argv, env, ready, url)
        self.starting = None
        return started

    def restart(self, names: list[str], rolling: bool, say: Say) -> None:
        for name in names:
            self._find(name)  # every name known before anything stops
        if rolling:
            for name in names:
                say(f"{name}: stopping (in-flight requests finish)")
                self._stop(name)
                r = self._start(name)
                say(f"{name}: ready, pid {r.pid}")
            return
        for name in names:
            say(f"{name}: stopping")
            self._stop(name)
        for name in names:
            r = self._start(name)
            say(f"{name}: ready, pid {r.pid}")

    def reload_gateway(self, say: Say) -> None:
        gateway = self._find("gateway")
        argv = self._argv["gateway"][0]
        scratch = self.config.dir / "nginx-next"
        shutil.rmtree(scratch, ignore_errors=True)
        check = subprocess.run(  # noqa: S603 - our argv, no shell
            [argv[0], "-t", "-q", "-c", str(render_gateway(self.config, scratch)), *argv[3:]],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        shutil.rmtree(scratch, ignore_errors=True)
        if check.returncode != 0:
            raise StackError(f"the new gateway configuration is refused:\n{check.stderr}")
        render_gateway(self.config, self.config.dir / "nginx")
        os.kill(gateway.pid, signal.SIGHUP)
        say(f"gateway: configuration checked and reloaded (pid {gateway.pid})")

    def check(self) -> str | None:
        """Start dead replicas again (with back-off); the name of another process that
        has died since the last check, for the caller to decide about."""
        now = time.monotonic()
        for r in list(self.running):
            with_child_reaped(r.pid)
            if r.name == NAME or alive(r):
                self._reported.discard(r.name)
                continue
            if not is_replica(r.name):
                if r.name in self._reported:
                    continue
                self._reported.add(r.name)
                return r.name
            if now < self._next_try.get(r.name, 0.0):
                continue
            tries = self._tries.get(r.name, 0)
            sys.stderr.write(f"supervisor: {r.name} (pid {r.pid}) exited; starting it again\n")
            try:
                self._stop(r.name)  # what is left of its process group
                started = self._start(r.name)
            except StackError as exc:
                pause = BACKOFF_S[min(tries, len(BACKOFF_S) - 1)]
                self._tries[r.name] = tries + 1
                self._next_try[r.name] = time.monotonic() + pause
                sys.stderr.write(f"supervisor: {r.name} failed to start ({exc}); {pause}s\n")
                continue
            self._tries.pop(r.name, None)
            sys.stderr.write(f"supervisor: {r.name} ready again, pid {started.pid}\n")
        return None

    # --- the operators' socket ----------------------------------------------------------

    def listen(self) -> socket.socket:
        path = socket_path(self.config)
        path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # 0600: only the stack's user may restart it
        try:
            server.bind(str(path))
        finally:
            os.umask(old)
        server.listen(8)
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return server

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed on the way out
                return
            self._requests.put(conn)

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(COMMAND_TIMEOUT_S)

            def say(message: str) -> None:
                with contextlib.suppress(OSError):  # an operator who stopped listening
                    conn.sendall(json.dumps({"say": message}).encode() + b"\n")

            try:
                request = json.loads(conn.makefile("rb").readline() or b"{}")
                self._carry_out(request, say)
            except (StackError, ValueError, KeyError, TypeError, OSError) as exc:
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"ok": False, "error": str(exc)}).encode() + b"\n")
                return
            with contextlib.suppress(OSError):
                conn.sendall(b'{"ok": true}\n')

    def _carry_out(self, request: dict[str, Any], say: Say) -> None:
        op = request.get("op")
        if op == "ping":
            return
        if op == "reload":
            self.reload_gateway(say)
            return
        if op != "restart":
            raise ValueError(f"unknown operation {op!r}")
        name = request.get("name")
        if name is None:
            names = [r.name for r in self.running if is_replica(r.name)]
        elif isinstance(name, str):
            names = [name]
        else:
            raise ValueError("name must be a string")
        if NAME in names:
            raise StackError("the supervisor is restarted with the stack (down, then up)")
        self.restart(names, bool(request.get("rolling")), say)

    def run(self, stop: threading.Event, stop_on_death: bool) -> str | None:
        """Until ``stop`` is set, or (``stop_on_death``) until a process other than a
        replica dies: its name. Otherwise such a death is reported once."""
        server = self.listen()
        try:
            while not stop.is_set():
                try:
                    conn = self._requests.get(timeout=CHECK_INTERVAL_S)
                except queue.Empty:
                    pass
                else:
                    self._answer(conn)
                died = self.check()
                if died is not None:
                    if stop_on_death:
                        return died
                    sys.stderr.write(f"supervisor: {died} is not running (restart it)\n")
            return None
        finally:
            server.close()
            socket_path(self.config).unlink(missing_ok=True)


# --- the detached supervisor process and its clients --------------------------------


def supervise(config: StackConfig) -> int:
    """``modelgate stack supervise``: what ``up --detach`` leaves running."""
    running = read_state(config)
    if not running:
        sys.stderr.write(f"supervisor: no stack recorded in {config.dir}\n")
        return 1
    me = Running(NAME, os.getpid(), start_ticks(os.getpid()) or -1, str(socket_path(config)))
    running = [r for r in running if r.name != NAME] + [me]
    write_state(config, running)

    def leave(signum: int, frame: FrameType | None) -> None:
        # SystemExit on the main thread, which is where starts and stops happen: a
        # replica half-started when ``down`` arrives is stopped by ``launch``'s caller
        # below instead of outliving the stack.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)
    supervisor = Supervisor(config, running)
    try:
        supervisor.run(threading.Event(), stop_on_death=False)
    except SystemExit:
        if supervisor.starting is not None:  # half-started: ``down`` may not know it
            r = supervisor._find(supervisor.starting)
            stop_pid(r.pid, r.started, timeout=5)
    return 0


def request(config: StackConfig, op: dict[str, Any], out: Say) -> int:
    """Send one operation to the stack's supervisor and relay what it says."""
    path = socket_path(config)
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(COMMAND_TIMEOUT_S)
        conn.connect(str(path))
    except OSError as exc:
        sys.stderr.write(f"modelgate stack: no supervisor at {path} ({exc}); is the stack up?\n")
        return 1
    with conn:
        conn.sendall(json.dumps(op).encode() + b"\n")
        for line in conn.makefile("rb"):
            answer = json.loads(line)
            if "say" in answer:
                out(str(answer["say"]))
            elif answer.get("ok"):
                return 0
            else:
                sys.stderr.write(f"modelgate stack: {answer.get('error')}\n")
                return 1
    sys.stderr.write("modelgate stack: the supervisor hung up without an answer\n")
    return 1


def supervisor_ok(config: StackConfig) -> bool:
    """The supervisor answers on its socket (a probe: quiet when it does not)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(str(socket_path(config)))
            conn.sendall(b'{"op": "ping"}\n')
            return bool(json.loads(conn.makefile("rb").readline() or b"{}").get("ok"))
    except (OSError, ValueError):
        return False


def spawn(config: StackConfig) -> Running:
    """Leave a supervisor running for a detached stack; return once it answers."""
    log = config.dir / "logs" / f"{NAME}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - our argv, no shell
            [str(Path(sys.executable).with_name("modelgate")), "stack", "supervise"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while not supervisor_ok(config):
        if proc.poll() is not None:
            raise StackError(f"the supervisor exited with {proc.returncode} (see {log})")
        if time.monotonic() > deadline:
            raise StackError("the supervisor did not answer within 30 s")
        time.sleep(0.1)  # polling interval
    return Running(NAME, proc.pid, start_ticks(proc.pid) or -1, str(socket_path(config)))
