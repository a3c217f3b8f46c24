"""The request path's pipelined Redis connection, against a real redis-server: replies go
to the command that asked, errors stay with their command, and a slow or dead Redis
fails fast without ever misaligning replies."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
import redis

from modelgate.shared.redisconn import PipelinedRedis, ResponseError
from tests.conftest import RedisServer, free_port, start_redis, stop_process


def test_concurrent_commands_each_get_their_own_reply(redis_server: RedisServer) -> None:
    async def run() -> list[list[bytes | None]]:
        client = PipelinedRedis(redis_server.url, timeout_s=1)
        await client.pipeline([("SET", f"rc:{i}", f"value {i}") for i in range(200)])
        replies = await asyncio.gather(
            *(client.execute("MGET", f"rc:{i}", "rc:absent") for i in range(200))
        )
        await client.close()
        return list(replies)

    assert asyncio.run(run()) == [[f"value {i}".encode(), None] for i in range(200)]


def test_an_error_reply_fails_only_its_own_command(redis_server: RedisServer) -> None:
    async def run() -> list[object]:
        client = PipelinedRedis(redis_server.url, timeout_s=1)
        await client.execute("SET", "rc:text", "not a number")
        results = await asyncio.gather(
            client.execute("GET", "rc:text"),
            client.execute("INCR", "rc:text"),
            client.execute("INCRBY", "rc:counter", 5),
            return_exceptions=True,
        )
        await client.close()
        return list(results)

    got, failed, counted = asyncio.run(run())
    assert got == b"not a number"
    assert isinstance(failed, ResponseError) and "not an integer" in str(failed)
    assert counted == 5


def test_scripts_load_themselves_once(redis_server: RedisServer) -> None:
    source = "return {KEYS[1], tonumber(ARGV[1]) * 2}"

    async def run() -> list[object]:
        client = PipelinedRedis(redis_server.url, timeout_s=1)
        first = await client.script(source, ["rc:k"], [21])
        await client.execute("SCRIPT", "FLUSH")  # e.g. Redis restarted: NOSCRIPT again
        second = await client.script(source, ["rc:k"], [4])
        await client.close()
        return [first, second]

    assert asyncio.run(run()) == [[b"rc:k", 42], [b"rc:k", 8]]


def test_a_command_past_its_timeout_aborts_the_connection_then_it_reconnects(
    redis_server: RedisServer,
) -> None:
    async def run() -> tuple[float, list[object], object]:
        client = PipelinedRedis(redis_server.url, timeout_s=0.1)
        await client.execute("PING")
        started = time.monotonic()
        # BLPOP holds this connection's replies for a second: everything behind it waits.
        stuck = await asyncio.gather(
            client.execute("BLPOP", "rc:empty", 1),
            client.execute("GET", "rc:any"),
            return_exceptions=True,
        )
        elapsed = time.monotonic() - started
        after = await client.execute("ECHO", "fresh")  # a new connection, replies in order
        await client.close()
        return elapsed, list(stuck), after

    elapsed, stuck, after = asyncio.run(run())
    assert elapsed < 0.5
    assert all(isinstance(e, TimeoutError) for e in stuck)
    assert after == b"fresh"


def test_a_dead_redis_fails_fast() -> None:
    async def run() -> tuple[float, BaseException | None]:
        client = PipelinedRedis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
        started = time.monotonic()
        try:
            await client.execute("PING")
        except OSError as exc:
            return time.monotonic() - started, exc
        return time.monotonic() - started, None

    elapsed, error = asyncio.run(run())
    assert isinstance(error, ConnectionError) and elapsed < 0.5


def test_password_and_database_from_the_url() -> None:
    server = start_redis()
    secret = secrets.token_hex(8)  # this private server's, set below
    try:
        with redis.Redis(port=server.port) as admin:
            admin.config_set("requirepass", secret)

        async def run(url: str) -> object:
            client = PipelinedRedis(url, timeout_s=1)
            try:
                return await client.execute("SET", "rc:db", "three")
            finally:
                await client.close()

        with pytest.raises(ResponseError, match="NOAUTH"):
            asyncio.run(run(f"redis://127.0.0.1:{server.port}/3"))
        assert asyncio.run(run(f"redis://:{secret}@127.0.0.1:{server.port}/3")) == b"OK"
        with redis.Redis(port=server.port, password=secret, db=3) as check:
            assert check.get("rc:db") == b"three"
    finally:
        stop_process(server.proc)


def test_unsupported_urls_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="unsupported Redis URL"):
        PipelinedRedis("http://127.0.0.1:6379", timeout_s=1)


def test_commands_made_while_connecting_share_one_connection(redis_server: RedisServer) -> None:
    async def run() -> list[object]:
        client = PipelinedRedis(redis_server.url, timeout_s=1)
        ids = await asyncio.gather(*(client.execute("CLIENT", "ID") for _ in range(10)))
        await client.close()
        return list(ids)

    ids = asyncio.run(run())
    assert len(ids) == 10 and len(set(ids)) == 1
