"""gunicorn settings for one modelgate replica (used by `modelgate serve` and the image).

Command-line flags (`--bind`, `--workers`) override these; the environment variables
(`MODELGATE_BIND`, `MODELGATE_WORKERS`, …) are for containers, where the command is fixed.
They are read once, by `modelgate.settings.ProcessSettings`, where each default is.
"""

import os
import shutil
import tempfile

from modelgate.settings import ProcessSettings

process = ProcessSettings()
bind = process.bind
workers = process.workers
# uvicorn-worker's UvicornWorker (uvicorn's own `uvicorn.workers` is deprecated), with
# the uvicorn options a replica wants (modelgate/edge/worker.py).
worker_class = "modelgate.edge.worker.ReplicaWorker"

# gunicorn >= 24 opens a control socket at one fixed path per user; several replicas on
# one host would fight over it, and nothing here uses it.
control_socket_disable = True

# Each worker imports torch and loads the models itself: forking a process that already
# initialised torch's thread pools is unsafe, and per-worker loading is what hot reload does.
preload_app = False

# X-Forwarded-For / -Proto are believed only from these addresses (the gateway), so a
# client can't choose the IP that quotas are keyed on.
forwarded_allow_ips = process.trusted_proxies

# Recycle a worker after this many requests (plus up to the jitter, so that a replica's
# workers don't all go at once); 0, the default, never. A bound on slow leaks for those
# who want one: the worker finishes what it holds, and the gateway retries a request
# that finds its kept-alive connection closed (the fault suite's F6 runs with it).
max_requests = process.max_requests
max_requests_jitter = process.max_requests_jitter

# A worker that blocks its event loop this long is killed and replaced.
timeout = 60
# On SIGTERM, workers stop accepting, finish in-flight requests, then exit; compose's
# stop_grace_period must be longer than this.
graceful_timeout = 20
# Longer than the gateway's upstream keepalive_timeout, so nginx closes idle connections
# first and never sends a request onto a connection we are closing.
keepalive = 75

# JSON logs from gunicorn itself too; the workers configure theirs in create_app.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "modelgate.observability.logging.JsonFormatter"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
    },
}


def on_starting(server):  # type: ignore[no-untyped-def]
    """Give this replica's workers one fresh multiprocess-metrics directory before they
    fork (they inherit the variable). MODELGATE_METRICS_DIR names it; otherwise a private
    temporary one, removed on exit. Emptied first: a previous run's counters would
    otherwise be added to this one's."""
    wanted = process.metrics_dir
    if wanted is not None:
        shutil.rmtree(wanted, ignore_errors=True)
        os.makedirs(wanted)
        path = str(wanted)
    else:
        path = tempfile.mkdtemp(prefix="modelgate-metrics-")
        os.environ["MODELGATE_METRICS_DIR_OWNED"] = path
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """A dead worker's live gauges (in flight, model info) must stop counting; its
    counters and histograms stay, so totals never go backwards."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if server.cfg.max_requests > 0 and metrics_dir:
        # A dead worker serves no more, however it ended (modelgate/edge/recycling.py).
        from modelgate.edge.recycling import Siblings

        Siblings.of_replica(metrics_dir, server.cfg.workers).gone(worker.pid)


def on_exit(server):  # type: ignore[no-untyped-def]
    owned = os.environ.get("MODELGATE_METRICS_DIR_OWNED")
    if owned:
        shutil.rmtree(owned, ignore_errors=True)


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    """Tie each worker's life to the master's. uvicorn workers don't watch their parent,
    so if the master is killed outright (OOM killer, SIGKILL) they would live on as
    orphans, still accepting on the replica's socket. On Linux the kernel sends them
    SIGTERM when the master dies, and they shut down gracefully."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
        server.log.warning("worker %s: prctl(PR_SET_PDEATHSIG) failed", worker.pid)
    elif os.getppid() != server.pid:  # the master died before the prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
