"""The wire formats the prediction routes speak, one module each.

Adding a protocol: write its module (a ``PROTOCOL`` with its routes table, decode, encode
and error shape; see ``base.py``) and add it to ``PROTOCOLS`` below.
"""

from __future__ import annotations

from modelgate.protocols import native, v1, v2
from modelgate.protocols.base import Protocol

PROTOCOLS: tuple[Protocol, ...] = (native.PROTOCOL, v2.PROTOCOL, v1.PROTOCOL)
