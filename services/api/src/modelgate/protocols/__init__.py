"""The wire formats the prediction routes speak, one module each.

Adding a protocol: write its module (a ``PROTOCOL`` with its routes table, decode, encode
and error shape; see ``base.py``) and add it to ``PROTOCOLS`` below.
"""

from __future__ import annotations

from modelgate.errors import ErrorShape
from modelgate.protocols import native, ranking, v1, v2
from modelgate.protocols.base import Protocol

PROTOCOLS: tuple[Protocol, ...] = (native.PROTOCOL, v2.PROTOCOL, v1.PROTOCOL, ranking.PROTOCOL)


def error_shape(path: str) -> ErrorShape:
    """The error shape of the protocol whose paths ``path`` is under; the native API's
    elsewhere (errors.py asks, for errors outside the prediction handler)."""
    for protocol in PROTOCOLS:
        if protocol.prefixes and path.startswith(protocol.prefixes):
            return protocol.error
    return native.PROTOCOL.error
