"""CoalescingTransport: the writes of one loop turn reach the socket as one write."""

from __future__ import annotations

import asyncio
from typing import Any

from modelgate.edge.wire import FLUSH_AT, CoalescingTransport


class Recording(asyncio.Transport):
    """The socket's transport, as far as the wrapper can tell: it records what it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        self.events.append("write")

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


def test_one_turns_writes_go_out_together_at_the_next_turn() -> None:
    async def run() -> tuple[list[bytes], list[bytes]]:
        socket = Recording()
        wire = CoalescingTransport(socket)
        wire.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        wire.write(b"{}")
        before = list(socket.writes)
        assert wire.get_write_buffer_size() == 40  # pending counts as buffered
        await asyncio.sleep(0)
        wire.write(b"next")  # a later turn: a write of its own
        await asyncio.sleep(0)
        return before, socket.writes

    before, after = asyncio.run(run())
    assert before == []
    assert after == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", b"next"]


def test_close_writes_what_is_pending_first_and_abort_drops_it() -> None:
    async def run() -> tuple[Recording, Recording]:
        closed, aborted = Recording(), Recording()
        wire = CoalescingTransport(closed)
        wire.write(b"last answer")
        wire.close()
        wire.write(b"after close")  # dropped, as asyncio's transports do
        other = CoalescingTransport(aborted)
        other.write(b"never sent")
        other.abort()
        await asyncio.sleep(0)
        return closed, aborted

    closed, aborted = asyncio.run(run())
    assert closed.events == ["write", "close"] and closed.writes == [b"last answer"]
    assert aborted.events == ["abort"]


def test_large_answers_do_not_wait_for_the_turn() -> None:
    async def run() -> list[bytes]:
        socket = Recording()
        wire = CoalescingTransport(socket)
        chunk = b"x" * (FLUSH_AT // 2)
        wire.write(chunk)
        wire.write(chunk)  # FLUSH_AT reached: written now, in one piece
        assert socket.writes == [chunk + chunk]
        wire.write(b"tail")
        await asyncio.sleep(0)
        return socket.writes

    assert asyncio.run(run()) == [b"x" * FLUSH_AT, b"tail"]
