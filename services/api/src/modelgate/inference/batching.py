"""Dynamic batching: concurrent requests for one model version become one tensor call.

Two parts, after LitServe's ``collate_requests``:

* ``take_batch`` — a pure function that decides whether a batch is due and, if so, takes
  it off the queue. It is tested with a plain deque and fake clocks.
* ``Batcher`` — a small loop around it, one per model version per worker. It runs the
  model in the worker's inference thread and hands each request its slice of the output.
  A call expected to be quicker than the trip to that thread and back (``inline_below_s``;
  the trip costs ~0.4 ms here: two thread wakeups, the GIL changing hands twice) runs on
  the event loop instead, so a tiny model doesn't pay more for the hand-off than for the
  math. The estimate comes from the model's own recent calls, and any call that turns out
  slower sends the next ones back to the thread.

While one batch runs in the thread, the event loop keeps parsing requests and queueing
them, so under load batches form by themselves; ``max_delay`` only bounds how long the
first request of a batch may wait for company when the model is idle. And it waits only
when company can come: when the worker has requests in flight that are neither queued
here nor in the running batch (``in_flight``). A lone request runs at once, so a lightly
loaded server doesn't add ``max_delay`` to every answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from opentelemetry.trace import SpanContext

from modelgate.errors import ModelNotReady, Overloaded
from modelgate.observability.tracing import Carried, Tracing

log = logging.getLogger("modelgate.batching")


@dataclass(slots=True)
class Pending:
    """One request's rows waiting for the model."""

    rows: np.ndarray
    future: asyncio.Future[tuple[np.ndarray, int]]
    enqueued_at: float
    # The request's span context, when tracing is on (tracing.py: the batch's spans).
    trace: SpanContext | None = None
    n: int = field(init=False)  # rows: read several times per batch, so kept

    def __post_init__(self) -> None:
        self.n = int(self.rows.shape[0])


def take_batch(
    queue: deque[Pending], max_rows: int, max_delay_s: float, now: float
) -> list[Pending] | None:
    """Pop and return the next batch if it is due, else return None and leave the queue.

    A batch is the longest prefix of the queue whose rows fit in ``max_rows`` (a single
    request larger than that goes alone). It is due when it is full — the next request
    would not fit, or it holds ``max_rows`` rows — or when its oldest request has waited
    ``max_delay_s``. Requests whose callers gave up are dropped, not run.
    """
    while queue and queue[0].future.done():
        queue.popleft()
    if not queue:
        return None
    total = 0
    count = 0
    full = False
    for pending in queue:
        if pending.future.done():
            count += 1  # dropped below without costing rows
            continue
        if total and total + pending.n > max_rows:
            full = True
            break
        total += pending.n
        count += 1
        if total >= max_rows:
            full = True
            break
    if not full and now - queue[0].enqueued_at < max_delay_s:
        return None
    taken = [queue.popleft() for _ in range(count)]
    return [p for p in taken if not p.future.done()]


@dataclass
class Batcher:
    """Queue and loop for one model version in one worker."""

    run_model: Callable[[np.ndarray], np.ndarray]
    executor: Executor
    max_rows: int
    max_delay_s: float
    max_queue_rows: int
    clock: Callable[[], float] = time.monotonic
    # For metrics: (rows, seconds in the tensor call, each request's wait in the queue).
    on_batch: Callable[[int, float, list[float]], None] | None = None
    # HTTP requests in flight in this worker; None: always wait up to max_delay.
    in_flight: Callable[[], int] | None = None
    # Calls estimated to take less than this run on the event loop; 0: never.
    inline_below_s: float = 0.0
    # Tracing (tracing.py): None when off; the model's attributes for the batch's spans.
    tracing: Tracing | None = None
    trace_attributes: dict[str, Any] = field(default_factory=dict)
    # Recent tensor calls (exponential averages): their cost to the event loop (see
    # _run) and their rows.
    _call_s: float | None = None
    _call_rows: float = 1.0
    _running: int = 0  # requests in the batch being run
    _queue: deque[Pending] = field(default_factory=deque)
    _queued_rows: int = 0
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _closing: bool = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, rows: np.ndarray) -> tuple[np.ndarray, int]:
        """Outputs for ``rows`` and the number of rows in the largest tensor call they
        rode in. Requests bigger than ``max_rows`` are split into several calls."""
        if rows.shape[0] > self.max_rows:
            parts = [
                self._enqueue(rows[i : i + self.max_rows])
                for i in range(0, rows.shape[0], self.max_rows)
            ]
            results = await asyncio.gather(*parts)
            return (
                np.concatenate([out for out, _ in results]),
                max(size for _, size in results),
            )
        return await self._enqueue(rows)

    def _enqueue(self, rows: np.ndarray) -> asyncio.Future[tuple[np.ndarray, int]]:
        if self._closing:
            raise ModelNotReady("model version is being unloaded")
        if self._queued_rows + rows.shape[0] > self.max_queue_rows:
            raise Overloaded(
                f"inference queue is full ({self._queued_rows} rows waiting); retry shortly"
            )
        future: asyncio.Future[tuple[np.ndarray, int]] = asyncio.get_running_loop().create_future()
        traced = None if self.tracing is None else self.tracing.current()
        self._queue.append(Pending(rows, future, self.clock(), traced))
        self._queued_rows += rows.shape[0]
        self._wakeup.set()
        self.start()
        return future

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def _company_may_come(self) -> bool:
        """Whether a request in flight may still join the queue (it is in the worker but
        neither queued nor running here: reading its body, being validated, …)."""
        if self.in_flight is None:
            return True
        return self.in_flight() > len(self._queue) + self._running

    async def _loop(self) -> None:
        while True:
            delay = self.max_delay_s if self._company_may_come() else 0.0
            batch = take_batch(self._queue, self.max_rows, delay, self.clock())
            if batch is None:
                if self._closing and not self._queue:
                    return
                self._wakeup.clear()
                timeout = None
                if self._queue:
                    waited = self.clock() - self._queue[0].enqueued_at
                    timeout = max(self.max_delay_s - waited, 0.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                self._recount()
                continue
            self._recount()
            await self._run(batch)

    def _recount(self) -> None:
        self._queued_rows = sum(p.n for p in self._queue)

    async def _run(self, batch: list[Pending]) -> None:
        if not batch:
            return
        rows = batch[0].rows if len(batch) == 1 else np.concatenate([p.rows for p in batch])
        size = int(rows.shape[0])
        begun = self.clock()
        started = time.perf_counter()
        self._running = len(batch)
        try:
            inline = self._inline(size)
            if inline:
                out, seconds, cpu_s = _timed(self.run_model, rows)
            else:
                out, seconds, cpu_s = await asyncio.get_running_loop().run_in_executor(
                    self.executor, _timed, self.run_model, rows
                )
        except Exception as exc:
            log.error("batch inference failed", exc_info=exc, extra={"batch_rows": size})
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        finally:
            self._running = 0
        # What running inline costs the loop: measured as wall time where it ran inline;
        # in the thread as CPU time (the wall time there also counts waits for the GIL and
        # a core, _timed says). With several intra-op threads the CPU time of the calling
        # thread undercounts, which the next inline call's wall time then corrects.
        self._learn(size, seconds if inline else cpu_s)
        batch_s = time.perf_counter() - started
        if self.on_batch is not None:
            waits = [begun - p.enqueued_at for p in batch]
            self.on_batch(size, batch_s, waits)
        offset = 0
        for p in batch:
            if not p.future.done():
                p.future.set_result((out[offset : offset + p.n], size))
            offset += p.n
        # After the answers are handed over: a sampled batch's spans delay nobody.
        if self.tracing is not None:
            self.tracing.batch(
                [
                    Carried(p.trace, p.n, begun - p.enqueued_at)
                    for p in batch
                    if p.trace is not None
                ],
                self.trace_attributes,
                len(batch),
                size,
                batch_s,
                seconds,
                inline,
            )

    def _inline(self, rows: int) -> bool:
        """Whether a call on ``rows`` rows is expected to beat the trip to the thread:
        recent calls scaled linearly to this size (an overestimate for calls larger than
        usual, as a call's fixed cost doesn't grow with its rows)."""
        if self._call_s is None or self.inline_below_s <= 0:
            return False
        return self._call_s * max(1.0, rows / self._call_rows) < self.inline_below_s

    def _learn(self, rows: int, seconds: float) -> None:
        if self._call_s is None or seconds >= self.inline_below_s:
            # The first call, or one too slow to run inline: taken as is, at once.
            self._call_s, self._call_rows = seconds, float(rows)
            return
        self._call_s += 0.2 * (seconds - self._call_s)
        self._call_rows += 0.2 * (rows - self._call_rows)

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task


def _timed(
    run: Callable[[np.ndarray], np.ndarray], rows: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """``run(rows)``, how long it took, and the CPU time it took, measured where it runs
    (not the hand-off).

    The inline estimate learns from the CPU time of a call in the thread: its wall time
    also counts waiting for the GIL (torch gives it up during the call and must take it
    back from a busy event loop, up to the 5 ms switch interval each time) and for a core.
    Under S6 a 21 µs ranking call took 25 ms of wall time there (with OpenMP's stalls,
    runtime.torch_thread_pool), and learning from that kept every later call off the
    event loop: the estimate saw only the thread's waits."""
    started, cpu = time.perf_counter(), time.thread_time()
    out = run(rows)
    return out, time.perf_counter() - started, time.thread_time() - cpu
