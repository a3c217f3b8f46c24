"""Loopback ports for the servers tests and the bench start: never from the ephemeral
range (an outgoing connection could take one before its server binds it), never the
same one twice in a process."""

from __future__ import annotations

import socket

from tests.ports import _ephemeral_start, free_port


def test_ports_are_bindable_distinct_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(10000 <= p < _ephemeral_start() for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # still free: nothing took it meanwhile
