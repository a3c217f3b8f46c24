"""A bounded load client for the fault suite: raw HTTP/1.1 over asyncio, loopback only.

Each of ``connections`` tasks sends predictions back to back on one kept-alive
connection (closed loop), or paced so that all of them together send ``rate`` requests a
second. Every loop is bounded: by ``max_seconds`` and by ``max_requests``, whichever
comes first, and every request by a timeout longer than the gateway's own (so the
gateway's 504 arrives before the client gives up).

Every request ends in one ``Answer``: an HTTP status, or the error that took its place
("refused", "reset", "timeout"). Nothing is retried: the fault suite counts what a client
would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

CHURN_BASE = [35, 75000, 680, 24, 730, 85.5, 2, False, 2, 3]
REQUEST_TIMEOUT_S = 40.0  # the gateway's proxy_read_timeout is 30 s


@dataclass(slots=True)
class Answer:
    sent: float  # time.monotonic() when the request was written
    latency: float  # seconds until the whole answer was read (or the error)
    status: int  # 0: no HTTP answer, see error
    error: str  # "" | "refused" | "reset" | "timeout"
    request_id: str
    version: str = ""  # X-Model-Version
    cache: str = ""  # X-Cache
    retry_after: bool = False
    keep_alive_s: float = 0.0  # the server's advertised idle timeout (Keep-Alive: timeout=)
    request: bytes = b""  # the body sent and the body answered, when the load keeps them
    body: bytes = b""

    @property
    def outcome(self) -> str:
        return str(self.status) if self.status else self.error


def churn_body(hot_share: float, rng: random.Random) -> bytes:
    """A churn prediction: one of 20 hot inputs (cache hits once warm) with probability
    ``hot_share``, else a fresh one (a miss that runs the model)."""
    if rng.random() < hot_share:
        income = 50_000 + rng.randrange(20)
    else:
        income = 100_000 + rng.randrange(9_000_000) + rng.randrange(100) / 100  # in bounds
    features = [CHURN_BASE[0], income, *CHURN_BASE[2:]]
    return b'{"features": [' + ",".join(_json(v) for v in features).encode() + b"]}"


def _json(v: object) -> str:
    return "false" if v is False else "true" if v is True else str(v)


@dataclass
class Load:
    host: str
    port: int
    connections: int = 8
    rate: float | None = None  # total requests per second; None: as fast as answered
    max_seconds: float = 60.0
    max_requests: int = 200_000
    hot_share: float = 0.5
    path: str = "/predict"
    source_ip: str = "127.0.0.1"
    body: Callable[[random.Random], bytes] | None = None
    keep_bodies: bool = False
    reconnects: int = 0  # idle connections found closed by the server before reuse
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def start(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(REQUEST_TIMEOUT_S + 5)
            assert not self._thread.is_alive(), "the load client did not stop"
        return self.answers

    def run(self) -> list[Answer]:
        """In the foreground, until a bound is reached."""
        asyncio.run(self._main())
        return self.answers

    async def _main(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        await asyncio.gather(*(self._worker(i, deadline) for i in range(self.connections)))

    async def _worker(self, i: int, deadline: float) -> None:
        rng = random.Random(i)  # noqa: S311 - inputs, not secrets
        interval = self.connections / self.rate if self.rate else 0.0
        next_at = time.monotonic() + rng.random() * interval
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if next(self._counter) >= self.max_requests:
                    return
                if interval:
                    pause = next_at - time.monotonic()
                    if pause > 0:
                        await asyncio.sleep(min(pause, 0.5))
                        continue
                    next_at += interval
                body = self.body(rng) if self.body else churn_body(self.hot_share, rng)
                answer, conn = await self._one(conn, body)
                self.answers.append(answer)
                if answer.status == 0:
                    await asyncio.sleep(0.01)  # an error: don't spin on a dead port
        finally:
            if conn is not None:
                conn[1].close()

    async def _one(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None, body: bytes
    ) -> tuple[Answer, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
        rid = f"flt-{uuid.uuid4().hex[:20]}"
        sent = time.monotonic()
        request = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nX-Request-ID: {rid}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        if conn is not None and conn[0].at_eof():
            # The server closed this idle connection (a gateway reload, an idle timeout):
            # open another, as HTTP clients' pools do before reusing one.
            conn[1].close()
            conn = None
            self.reconnects += 1
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if conn is None:
                    conn = await asyncio.open_connection(
                        self.host, self.port, local_addr=(self.source_ip, 0)
                    )
                reader, writer = conn
                writer.write(request)
                await writer.drain()
                status, headers, keep, content = await read_response(reader)
        except TimeoutError:
            error = "timeout"
        except ConnectionRefusedError:
            error = "refused"
        except (OSError, asyncio.IncompleteReadError, ValueError):
            error = "reset"
        else:
            answer = Answer(
                sent,
                time.monotonic() - sent,
                status,
                "",
                rid,
                headers.get("x-model-version", ""),
                headers.get("x-cache", ""),
                "retry-after" in headers,
            )
            advertised = headers.get("keep-alive", "").removeprefix("timeout=").split(",")[0]
            if advertised.strip().isdigit():
                answer.keep_alive_s = float(advertised)
            if self.keep_bodies:
                answer.request, answer.body = body, content
            if not keep:
                conn[1].close()
                conn = None
            return answer, conn
        if conn is not None:
            conn[1].close()
        return Answer(sent, time.monotonic() - sent, 0, error, rid), None


async def read_response(
    reader: asyncio.StreamReader,
) -> tuple[int, dict[str, str], bool, bytes]:
    """Status, lower-cased headers, whether the connection stays open, and the body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    content = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            content += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                break
    else:
        content = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, headers.get("connection", "").lower() != "close", content


async def slow_connections(
    host: str, port: int, count: int, seconds: float, source_ip: str
) -> tuple[int, int]:
    """``count`` slowloris connections held for ``seconds``: each sends a request line and
    then one header byte every 2 s, never finishing, and opens another when the server
    closes it (as an attacker would). Returns (connections opened, closed by the server)."""
    opened = closed = 0
    end = time.monotonic() + seconds

    async def one() -> None:
        nonlocal opened, closed
        while time.monotonic() < end:
            try:
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(source_ip, 0)
                )
            except OSError:
                await asyncio.sleep(0.5)
                continue
            opened += 1
            try:
                writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
                while time.monotonic() < end:
                    writer.write(b"X")
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(2):
                            await reader.read(1024)  # an answer (408) or the end: closed
                            closed += 1
                            break
            except OSError:
                closed += 1
            finally:
                writer.close()

    await asyncio.gather(*(one() for _ in range(count)))
    return opened, closed


if __name__ == "__main__":
    # The slowloris side of F11 in a process of its own, so that it does not share the
    # measuring client's interpreter: python -m tests.faults.load HOST PORT N SECONDS IP
    import sys

    host, port, count, seconds, ip = sys.argv[1:6]
    result = asyncio.run(slow_connections(host, int(port), int(count), float(seconds), ip))
    sys.stdout.write(f"{result[0]} {result[1]}\n")
