"""Render the files under ``infra/`` for the native stack, exactly as compose would.

Compose renders ``infra/nginx/templates/*.template`` with the nginx image's envsubst,
which replaces ``${NAME}`` for names defined in the environment and leaves nginx's own
``$variables`` alone. ``render`` does the same for a given mapping, and refuses to leave
an upper-case ``${NAME}`` unresolved, so a missing value fails loudly at render time
instead of producing a config that means something else.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


class RenderError(ValueError):
    pass


def render(template: str, values: Mapping[str, str]) -> str:
    missing = sorted({m for m in _PLACEHOLDER.findall(template) if m not in values})
    if missing:
        raise RenderError(f"no value for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def gateway_values(
    *,
    listen: str,
    status_listen: str,
    upstreams: list[str],
    access_log: str,
    metrics_log: str = "/dev/null",
    max_body: str = "4m",
    req_per_ip: int = 10000,
    req_burst: int = 20000,
    conn_per_ip: int = 1024,
    trace_sample_percent: float = 1.0,
) -> dict[str, str]:
    """The variables of the gateway template; compose sets the same names. ``metrics_log``
    is where the one-line-per-answer metrics log goes: ``syslog:server=HOST:PORT,...``
    for the gateway log exporter (gatewaylog.py), or a file. ``trace_sample_percent``: the
    share of the traces the gateway starts that it marks sampled (nginx's split_clients
    takes 0.01 to 100, two decimals; keep it at the replicas' OTEL_TRACES_SAMPLER_ARG)."""
    if len(upstreams) != 3:
        raise RenderError("the gateway template names exactly three replicas")
    if not 0.01 <= trace_sample_percent <= 100 or round(trace_sample_percent, 2) != (
        trace_sample_percent
    ):
        raise RenderError("trace_sample_percent: 0.01 to 100, at most two decimals")
    return {
        "GATEWAY_LISTEN": listen,
        "GATEWAY_STATUS_LISTEN": status_listen,
        "GATEWAY_ACCESS_LOG": access_log,
        "GATEWAY_METRICS_LOG": metrics_log,
        "GATEWAY_MAX_BODY": max_body,
        "GATEWAY_REQ_PER_IP": str(req_per_ip),
        "GATEWAY_REQ_BURST": str(req_burst),
        "GATEWAY_CONN_PER_IP": str(conn_per_ip),
        "GATEWAY_TRACE_SAMPLE_PERCENT": f"{trace_sample_percent:g}",
        "API_1": upstreams[0],
        "API_2": upstreams[1],
        "API_3": upstreams[2],
    }


def trace_sample_percent(ratio: float) -> float:
    """The gateway's sampled share for a replica sampler ratio (0 to 1), within what
    nginx's split_clients takes: 0.01 % to 100 %, two decimals."""
    return min(100.0, max(0.01, round(ratio * 100, 2)))


def render_native_gateway(
    infra: Path, out_dir: Path, values: Mapping[str, str], workers: int = 1
) -> Path:
    """Write the site config and a main config around it; returns the main config."""
    out_dir.mkdir(parents=True, exist_ok=True)
    temp = _temp_dir(out_dir)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (temp / sub).mkdir(parents=True, exist_ok=True)
    site = out_dir / "gateway.conf"
    site.write_text(render((infra / "nginx/templates/default.conf.template").read_text(), values))
    main = out_dir / "nginx.conf"
    main_values = {
        "GATEWAY_WORKERS": str(workers),
        "GATEWAY_PID": str(out_dir / "nginx.pid"),
        "GATEWAY_ERROR_LOG": str(out_dir / "error.log"),
        "GATEWAY_MIME_TYPES": "/etc/nginx/mime.types",
        "GATEWAY_TEMP": str(temp),
        "GATEWAY_SITE_CONF": str(site),
    }
    main.write_text(render((infra / "nginx/native.conf.template").read_text(), main_values))
    return main


def _temp_dir(out_dir: Path) -> Path:
    """Where nginx buffers bodies past ``client_body_buffer_size``.

    Run as root, nginx's workers run as ``nobody`` and must reach this folder: inside a
    0700 parent (a home folder, pytest's temporary folders) they can't, and every body
    over 64 KiB is answered 500. So, as root, the folder is a private one in the system's
    temporary directory, traversable (0711) but not listable, named after the stack."""
    if os.geteuid() != 0:
        return out_dir / "temp"
    digest = hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:16]
    temp = Path(tempfile.gettempdir()) / f"modelgate-nginx-{digest}"
    with contextlib.suppress(FileExistsError):
        temp.mkdir(mode=0o711)
    info = temp.lstat()
    # In a shared /tmp, refuse a name someone else created (or a symlink planted there).
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
        raise RenderError(f"{temp} exists and is not a folder of root's")
    temp.chmod(0o711)
    return temp
