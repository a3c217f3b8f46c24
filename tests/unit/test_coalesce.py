"""PerTurn: the calls of one event-loop turn go out as one, and each gets its own answer."""

from __future__ import annotations

import asyncio

import pytest

from modelgate.shared.coalesce import NextTurn, PerTurn


def test_one_send_per_turn_each_caller_its_own_answer() -> None:
    sent: list[list[int]] = []

    async def send(items: list[int]) -> list[int]:
        sent.append(items)
        return [i * 10 for i in items]

    async def run() -> tuple[list[int], int]:
        per_turn = PerTurn(send)
        first = await asyncio.gather(*(per_turn.submit(i) for i in range(5)))
        later = await per_turn.submit(7)  # a later turn: a call of its own
        return first, later

    first, later = asyncio.run(run())
    assert first == [0, 10, 20, 30, 40] and later == 70
    assert sent == [[0, 1, 2, 3, 4], [7]]


def test_a_failed_send_fails_every_caller_of_its_turn_only() -> None:
    calls = 0

    async def send(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("redis gone")
        return items

    async def run() -> tuple[list[object], int]:
        per_turn = PerTurn(send)
        failed = await asyncio.gather(
            *(per_turn.submit(i) for i in range(3)), return_exceptions=True
        )
        return failed, await per_turn.submit(4)

    failed, recovered = asyncio.run(run())
    assert all(isinstance(f, ConnectionError) for f in failed) and len(failed) == 3
    assert recovered == 4


def test_a_cancelled_caller_does_not_break_the_others() -> None:
    async def send(items: list[int]) -> list[int]:
        await asyncio.sleep(0.01)
        return items

    async def run() -> list[int]:
        per_turn = PerTurn(send)
        tasks = [asyncio.create_task(per_turn.submit(i)) for i in range(3)]
        await asyncio.sleep(0)
        tasks[1].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks[1]
        out = [await tasks[0], await tasks[2]]
        await per_turn.drain()
        return out

    assert asyncio.run(run()) == [0, 2]


def test_next_turn_hands_a_turns_items_on_together() -> None:
    delivered: list[list[int]] = []

    async def run() -> list[list[int]]:
        buffer = NextTurn(delivered.append)
        for i in range(3):
            buffer.add(i)
        assert delivered == [] and len(buffer) == 3  # nothing yet: this turn isn't over
        await asyncio.sleep(0)
        buffer.add(3)
        buffer.flush()  # on demand, e.g. at shutdown
        await asyncio.sleep(0)  # the turn's scheduled hand-on finds nothing left
        return delivered

    assert asyncio.run(run()) == [[0, 1, 2], [3]]
    outside: list[list[int]] = []
    NextTurn(outside.append).add(7)  # no running loop: at once
    assert outside == [[7]]


def test_next_turn_with_a_delay_gathers_several_turns_or_max_items() -> None:
    delivered: list[list[int]] = []

    async def run() -> None:
        gathered = NextTurn(delivered.append, after_s=0.05, max_items=4)
        for i in range(3):  # three turns, well within the delay: one delivery
            gathered.add(i)
            await asyncio.sleep(0)
        assert delivered == []
        await asyncio.sleep(0.1)
        assert delivered == [[0, 1, 2]]
        for i in range(10, 15):  # one turn, past max_items: the first four at once
            gathered.add(i)
        assert delivered == [[0, 1, 2], [10, 11, 12, 13]]
        await asyncio.sleep(0.1)

    asyncio.run(run())
    assert delivered == [[0, 1, 2], [10, 11, 12, 13], [14]]
