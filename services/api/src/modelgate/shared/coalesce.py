"""Calls made in the same event-loop turn share one round trip (``PerTurn``), and
fire-and-forget work made in one turn is handed on together (``NextTurn``).

Under load a worker starts many requests per turn of its event loop, and each wants
Redis (a quota check, a cache lookup). With redis-py's asyncio client a command costs
about 100 µs of Python when 64 run concurrently (connection pool, parser, futures), but
a key inside one MGET of 64 costs about 4 µs. ``PerTurn`` collects what is submitted in
one turn and sends it as one call at the start of the next: the latency cost is one
loop turn, and under no load (one request per turn) it is the plain call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class NextTurn(Generic[T]):
    """Items added in one event-loop turn are handed to ``deliver`` together, at the start
    of the next turn (at once when no loop runs). ``flush`` hands them on now.

    With ``after_s``, items are gathered that long from the first instead (or until
    ``max_items`` wait): for deliveries that wake a thread, where one wake-up per turn
    under load is itself a cost."""

    def __init__(
        self,
        deliver: Callable[[list[T]], None],
        after_s: float = 0.0,
        max_items: int | None = None,
    ) -> None:
        self._deliver = deliver
        self._after_s = after_s
        self._max_items = max_items
        self._items: list[T] = []

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> None:
        self._items.append(item)
        if len(self._items) == 1:  # the first one schedules the hand-over of them all
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no running loop (a direct call): now
                self.flush()
                return
            if self._after_s > 0:
                loop.call_later(self._after_s, self.flush)
            else:
                loop.call_soon(self.flush)
        elif self._max_items is not None and len(self._items) >= self._max_items:
            self.flush()  # the scheduled call then finds nothing, or the next ones

    def flush(self) -> None:
        items, self._items = self._items, []
        if items:
            self._deliver(items)


class PerTurn(Generic[T, R]):
    """``await submit(item)`` answers with ``send(items)[i]`` for that item, where
    ``send`` is called once per turn with every item submitted in it. If ``send`` raises,
    every caller of that turn gets the exception."""

    def __init__(self, send: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._send = send
        self._calls: NextTurn[tuple[T, asyncio.Future[R]]] = NextTurn(self._start)
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        waiter: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._calls.add((item, waiter))
        return await waiter

    def _start(self, calls: list[tuple[T, asyncio.Future[R]]]) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(calls))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, calls: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._send([item for item, _ in calls])
        except Exception as exc:
            for _, waiter in calls:
                if not waiter.done():  # its request may have been cancelled meanwhile
                    waiter.set_exception(exc)
            return
        for (_, waiter), result in zip(calls, results, strict=True):
            if not waiter.done():
                waiter.set_result(result)

    async def drain(self) -> None:
        """Wait for the calls under way (shutdown, tests)."""
        while len(self._calls) or self._sending:
            self._calls.flush()
            await asyncio.gather(*self._sending, return_exceptions=True)
