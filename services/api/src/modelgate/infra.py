"""Render the files under ``infra/`` for the native stack, exactly as compose would.

Compose renders ``infra/nginx/templates/*.template`` with the nginx image's envsubst,
which replaces ``${NAME}`` for names defined in the environment and leaves nginx's own
``$variables`` alone. ``render`` does the same for a given mapping, and refuses to leave
an upper-case ``${NAME}`` unresolved, so a missing value fails loudly at render time
instead of producing a config that means something else.
"""

from __future__ import annotations

import re
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
    max_body: str = "4m",
    req_per_ip: int = 10000,
    req_burst: int = 20000,
    conn_per_ip: int = 1024,
) -> dict[str, str]:
    """The variables of the gateway template; compose sets the same names."""
    if len(upstreams) != 3:
        raise RenderError("the gateway template names exactly three replicas")
    return {
        "GATEWAY_LISTEN": listen,
        "GATEWAY_STATUS_LISTEN": status_listen,
        "GATEWAY_ACCESS_LOG": access_log,
        "GATEWAY_MAX_BODY": max_body,
        "GATEWAY_REQ_PER_IP": str(req_per_ip),
        "GATEWAY_REQ_BURST": str(req_burst),
        "GATEWAY_CONN_PER_IP": str(conn_per_ip),
        "API_1": upstreams[0],
        "API_2": upstreams[1],
        "API_3": upstreams[2],
    }


def render_native_gateway(
    infra: Path, out_dir: Path, values: Mapping[str, str], workers: int = 1
) -> Path:
    """Write the site config and a main config around it; returns the main config."""
    out_dir.mkdir(parents=True, exist_ok=True)
    temp = out_dir / "temp"
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
