"""One pipelined Redis connection for the request path (quotas and the prediction cache).

redis-py's asyncio client costs 60–100 µs of the event loop per command under load
(a pool checkout, a lock, stream reader and writer, retry wrappers), as much as the
rest of a cached prediction. What the request path needs is small: send a command,
get its reply, never wait long. ``PipelinedRedis`` keeps one connection per worker,
writes each command as soon as it is made and matches replies to commands in order
(Redis answers a connection's commands in the order it received them), parsing with
hiredis.

Failure rules, so a reply can never be handed to the wrong command:

* A command unanswered after ``timeout_s`` aborts the connection, and every command
  waiting on it fails with ``ConnectionError``; the next command reconnects.
* A connection that closes, or fails to connect within ``timeout_s``, does the same.
* An error reply (``-ERR …``) fails only its own command, as ``ResponseError``.

The callers treat every failure as "Redis is unavailable" and trip their circuit breaker
(rediscache.py), so nothing here retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis


class ResponseError(Exception):
    """Redis answered this command with an error."""


# Everything a command can fail with: an error reply, a lost or refused connection
# (ConnectionError is an OSError), no answer in time.
REDIS_ERRORS = (ResponseError, OSError, TimeoutError)


def encode(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        out += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    """The connection: commands' futures wait in ``waiting`` until their replies arrive."""

    def __init__(self, on_lost: Any) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=ResponseError)
        # (future, the time its command was sent) in sending order.
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: the stream can't be trusted
                self.abort(ConnectionError("unexpected reply from Redis"))
                return
            future, _ = waiting.popleft()
            if future.done():
                continue  # its caller gave up; the reply is still consumed in order
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(ConnectionError(f"Redis connection lost: {exc or 'closed'}"))
        self._on_lost(self)

    def abort(self, exc: Exception) -> None:
        self._fail_all(exc)
        self._on_lost(self)
        if self.transport is not None:
            self.transport.abort()

    def _fail_all(self, exc: Exception) -> None:
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)


class PipelinedRedis:
    """A minimal asyncio Redis client: ``redis://[[user]:password@]host[:port][/db]``,
    ``rediss://`` for TLS, or ``unix:///path?db=N``."""

    def __init__(self, url: str, timeout_s: float) -> None:
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"unsupported Redis URL {url!r}: expected redis://, rediss://, unix://"
            )
        self.url = url
        self.timeout_s = timeout_s
        self._conn: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._scripts: dict[str, str] = {}  # source → its SHA1, the name EVALSHA runs

    async def execute(self, *args: Any) -> Any:
        """Send one command and wait for its reply."""
        conn = self._conn or await self._connect()
        return await self._send(conn, encode(args))

    async def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send several commands in one write; their replies, in order."""
        conn = self._conn or await self._connect()
        futures = self._queue(conn, b"".join(encode(c) for c in commands), len(commands))
        return list(await asyncio.gather(*futures))

    async def script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script by its SHA1, loading it once per server (EVALSHA, and on
        NOSCRIPT: SCRIPT LOAD, then EVALSHA again)."""
        sha = self._scripts.get(source)
        if sha is None:
            digest = hashlib.sha1(source.encode(), usedforsecurity=False)  # Redis's script id
            sha = self._scripts[source] = digest.hexdigest()
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.execute("SCRIPT", "LOAD", source)
        return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    # --- sending and timing out ----------------------------------------------------------

    def _send(self, conn: _Protocol, data: bytes) -> asyncio.Future[Any]:
        return self._queue(conn, data, 1)[0]

    def _queue(self, conn: _Protocol, data: bytes, n: int) -> list[asyncio.Future[Any]]:
        transport = conn.transport
        if transport is None or transport.is_closing():
            raise ConnectionError("Redis connection is closing")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures = [loop.create_future() for _ in range(n)]
        conn.waiting.extend((f, now) for f in futures)
        transport.write(data)
        if self._timer is None:
            self._timer = loop.call_later(self.timeout_s, self._check_timeout)
        return futures

    def _check_timeout(self) -> None:
        """Abort the connection if its oldest command has waited too long, else look
        again when it would have."""
        self._timer = None
        conn = self._conn
        if conn is None or not conn.waiting:
            return
        waited = time.monotonic() - conn.waiting[0][1]
        if waited >= self.timeout_s:
            conn.abort(TimeoutError(f"Redis did not answer within {self.timeout_s * 1000:g} ms"))
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.timeout_s - waited, self._check_timeout)

    # --- connecting ---------------------------------------------------------------------

    async def _connect(self) -> _Protocol:
        """Open the connection; callers arriving meanwhile share the one attempt."""
        connecting = self._connecting
        if connecting is None:
            connecting = self._connecting = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        parts = urlsplit(self.url)
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)

        def make() -> _Protocol:
            return _Protocol(self._lost)

        async def open_transport() -> _Protocol:
            if parts.scheme == "unix":
                _, conn = await loop.create_unix_connection(make, parts.path)
            else:
                tls = ssl.create_default_context() if parts.scheme == "rediss" else None
                _, conn = await loop.create_connection(
                    make, parts.hostname or "localhost", parts.port or 6379, ssl=tls
                )
            return conn

        conn = await asyncio.wait_for(open_transport(), self.timeout_s)
        db = (parts.path.lstrip("/") if parts.scheme != "unix" else "") or query.get("db", "0")
        setup: list[tuple[Any, ...]] = []
        if parts.password is not None:
            user = (unquote(parts.username),) if parts.username else ()
            setup.append(("AUTH", *user, unquote(parts.password)))
        if db != "0":
            setup.append(("SELECT", int(db)))
        self._conn = conn
        if setup:
            try:
                await asyncio.wait_for(
                    asyncio.gather(*self._queue(conn, b"".join(map(encode, setup)), len(setup))),
                    self.timeout_s,
                )
            except BaseException:
                self._conn = None
                conn.abort(ConnectionError("Redis connection setup failed"))
                raise
        return conn

    def _lost(self, conn: _Protocol) -> None:
        if self._conn is conn:
            self._conn = None
