"""Free loopback ports for servers started on 127.0.0.1 (the tests, the bench harness; not
shipped with the package, which never picks its own ports).

Binding port 0 returns a port from the kernel's ephemeral range — the range outgoing
connections take their local ports from. A port chosen that way can be taken by any
client socket (a replica connecting to Redis, say) before the server meant for it binds,
and the server then fails with "address already in use". Ports below the ephemeral range
are never handed to outgoing connections, so once checked free here they stay free
unless another process binds them on purpose.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 10000  # above the well-known and most registered service ports
# Handed out by this process: a port chosen but not yet bound looks free to the next call.
_handed: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A port that 127.0.0.1 can bind now and no outgoing connection will take."""
    highest = _ephemeral_start() - 1
    for _ in range(100):
        # Spreads the choices; nothing secret about them.
        port = random.randint(_LOWEST, highest) if highest > _LOWEST else 0  # noqa: S311
        if port in _handed:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        _handed.add(port)
        return port
    raise OSError("no free loopback port below the ephemeral range")
