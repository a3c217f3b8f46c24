"""The batch collector as a pure function, and the batching loop with a fake model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from modelgate.errors import Overloaded
from modelgate.inference.batching import Batcher, Pending, take_batch


def pending(n: int, at: float, loop: asyncio.AbstractEventLoop) -> Pending:
    return Pending(np.zeros((n, 2), np.float32), loop.create_future(), at)


@pytest.fixture
def loop() -> asyncio.AbstractEventLoop:
    lp = asyncio.new_event_loop()
    yield lp  # type: ignore[misc]
    lp.close()


def test_empty_queue_has_no_batch(loop: asyncio.AbstractEventLoop) -> None:
    assert take_batch(deque(), 8, 0.01, now=5.0) is None


def test_waits_for_company_until_the_delay(loop: asyncio.AbstractEventLoop) -> None:
    q = deque([pending(1, 1.000, loop), pending(1, 1.004, loop)])
    assert take_batch(q, 8, 0.010, now=1.009) is None
    assert len(q) == 2
    batch = take_batch(q, 8, 0.010, now=1.010)
    assert batch is not None and [p.n for p in batch] == [1, 1]
    assert not q


def test_full_batch_goes_at_once(loop: asyncio.AbstractEventLoop) -> None:
    q = deque(pending(1, 1.0, loop) for _ in range(10))
    batch = take_batch(q, 8, 10.0, now=1.0)
    assert batch is not None and len(batch) == 8
    assert len(q) == 2


def test_request_that_would_overflow_waits_for_the_next_batch(
    loop: asyncio.AbstractEventLoop,
) -> None:
    q = deque([pending(5, 1.0, loop), pending(4, 1.0, loop), pending(1, 1.0, loop)])
    batch = take_batch(q, 8, 10.0, now=1.0)
    assert batch is not None and [p.n for p in batch] == [5]
    assert [p.n for p in q] == [4, 1]


def test_oversized_request_goes_alone(loop: asyncio.AbstractEventLoop) -> None:
    q = deque([pending(20, 1.0, loop), pending(1, 1.0, loop)])
    batch = take_batch(q, 8, 10.0, now=1.0)
    assert batch is not None and [p.n for p in batch] == [20]


def test_abandoned_requests_are_dropped(loop: asyncio.AbstractEventLoop) -> None:
    a, b, c = pending(1, 1.0, loop), pending(1, 1.0, loop), pending(1, 1.0, loop)
    a.future.cancel()
    b.future.cancel()
    q = deque([a, b, c])
    batch = take_batch(q, 8, 0.0, now=1.0)
    assert batch == [c]
    assert not q


def test_concurrent_requests_share_one_model_call() -> None:
    calls: list[int] = []

    def model(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape[0])
        return x.sum(axis=1)

    async def scenario() -> list[tuple[np.ndarray, int]]:
        with ThreadPoolExecutor(1) as ex:
            b = Batcher(model, ex, max_rows=16, max_delay_s=0.05, max_queue_rows=100)
            rows = [np.full((1, 2), i, np.float32) for i in range(6)]
            out = await asyncio.gather(*(b.submit(r) for r in rows))
            await b.close()
            return out

    results = asyncio.run(scenario())
    assert calls == [6]
    assert [float(out[0]) for out, _ in results] == [0, 2, 4, 6, 8, 10]
    assert {size for _, size in results} == {6}


def test_large_request_is_split_into_max_rows_calls() -> None:
    calls: list[int] = []

    def model(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape[0])
        return x[:, 0]

    async def scenario() -> tuple[np.ndarray, int]:
        with ThreadPoolExecutor(1) as ex:
            b = Batcher(model, ex, max_rows=4, max_delay_s=0.0, max_queue_rows=100)
            rows = np.arange(10, dtype=np.float32).reshape(10, 1)
            out = await b.submit(rows)
            await b.close()
            return out

    out, size = asyncio.run(scenario())
    assert sorted(calls) == [2, 4, 4]
    assert out.tolist() == list(range(10))
    assert size == 4


def test_full_queue_answers_overloaded() -> None:
    async def scenario() -> None:
        with ThreadPoolExecutor(1) as ex:
            b = Batcher(lambda x: x[:, 0], ex, max_rows=4, max_delay_s=1.0, max_queue_rows=3)
            first = asyncio.ensure_future(b.submit(np.zeros((3, 1), np.float32)))
            await asyncio.sleep(0)
            with pytest.raises(Overloaded, match="queue is full"):
                await b.submit(np.zeros((1, 1), np.float32))
            first.cancel()
            await b.close()

    asyncio.run(scenario())


def test_model_failure_reaches_every_waiting_request() -> None:
    def model(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    async def scenario() -> list[BaseException | tuple[np.ndarray, int]]:
        with ThreadPoolExecutor(1) as ex:
            b = Batcher(model, ex, max_rows=8, max_delay_s=0.01, max_queue_rows=100)
            rows = [np.zeros((1, 1), np.float32) for _ in range(3)]
            out = await asyncio.gather(*(b.submit(r) for r in rows), return_exceptions=True)
            await b.close()
            return out

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) and str(r) == "boom" for r in results)


def test_a_lone_request_does_not_wait_for_company_that_cannot_come() -> None:
    async def one_request(in_flight: int) -> float:
        with ThreadPoolExecutor(1) as ex:
            b = Batcher(
                lambda x: x[:, 0], ex, max_rows=16, max_delay_s=0.3, max_queue_rows=100,
                in_flight=lambda: in_flight,
            )  # fmt: skip
            started = time.perf_counter()
            await b.submit(np.ones((1, 2), np.float32))
            elapsed = time.perf_counter() - started
            await b.close()
            return elapsed

    # Only this request is in flight: it runs at once.
    assert asyncio.run(one_request(in_flight=1)) < 0.2
    # Another request is in the worker (reading its body, say): wait for it, up to the delay.
    assert asyncio.run(one_request(in_flight=2)) >= 0.3


def spin(seconds: float) -> None:
    """Compute for ``seconds`` of CPU time, as the batcher measures a call in the thread."""
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass


def run_on(work: Callable[[bool], None], inline_below_s: float, calls: int) -> list[bool]:
    """For each of ``calls`` one-request batches: whether the model ran on the loop's
    thread (inline) rather than the inference thread. The model calls ``work(inline)``."""
    on_loop_thread: list[bool] = []

    async def scenario() -> None:
        loop_thread = threading.get_ident()

        def model(x: np.ndarray) -> np.ndarray:
            on_loop_thread.append(threading.get_ident() == loop_thread)
            work(on_loop_thread[-1])
            return x[:, 0]

        with ThreadPoolExecutor(1) as ex:
            b = Batcher(
                model, ex, max_rows=8, max_delay_s=0.0, max_queue_rows=100,
                inline_below_s=inline_below_s,
            )  # fmt: skip
            for i in range(calls):
                out, _ = await b.submit(np.full((1, 1), i, np.float32))
                assert out.tolist() == [i]
            await b.close()

    asyncio.run(scenario())
    return on_loop_thread


def run_batches(model_seconds: float, inline_below_s: float, calls: int) -> list[bool]:
    """``run_on`` with a model that computes for ``model_seconds`` each call."""
    return run_on(lambda _: spin(model_seconds), inline_below_s, calls)


def test_quick_calls_run_on_the_loop_once_measured() -> None:
    # The first call is measured in the thread; quick ones then stay on the loop.
    assert run_batches(0.0, inline_below_s=0.05, calls=4) == [False, True, True, True]


def test_slow_calls_stay_in_the_inference_thread() -> None:
    assert run_batches(0.003, inline_below_s=0.001, calls=3) == [False, False, False]


def test_inline_calls_off_when_the_threshold_is_zero() -> None:
    assert run_batches(0.0, inline_below_s=0.0, calls=3) == [False, False, False]


def test_waiting_in_the_thread_is_not_counted_as_the_calls_cost() -> None:
    """A call that waits in the inference thread (there: for the GIL, held by a busy
    event loop, or for a core) costs the loop nothing when run inline; only its CPU time
    counts. Counted as wall time, it kept every later call in the thread."""

    def work(inline: bool) -> None:
        if not inline:
            time.sleep(0.01)  # waiting, not computing

    assert run_on(work, inline_below_s=0.002, calls=3) == [False, True, True]


def test_a_call_slower_than_expected_sends_the_next_back_to_the_thread() -> None:
    durations = iter([0.0, 0.0, 0.004] + [0.0] * 9)
    on_loop_thread = run_on(lambda _: spin(next(durations)), inline_below_s=0.002, calls=12)
    # thread (first), loop, loop (slow: 4 ms); then the thread until quick calls there
    # bring the average back under the threshold, and the loop again.
    assert on_loop_thread[:4] == [False, True, True, False]
    assert on_loop_thread[-1] is True
