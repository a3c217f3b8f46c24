"""Access lines: the JSON log format, written in batches that never split a line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re

from modelgate.edge.accesslog import PIPE_BUF, AccessLog
from modelgate.observability.logging import configure_logging


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    out = b""
    try:
        while chunk := os.read(fd, 65536):
            out += chunk
    except BlockingIOError:
        pass
    return out


def test_lines_wait_for_the_flush_then_come_out_whole_and_in_order() -> None:
    r, w = os.pipe()
    log = AccessLog(fd=w, flush_after_s=0.02)

    async def serve() -> tuple[bytes, bytes]:
        for i in range(3):
            fields = {"request_id": f"id-{i}", "status": 200, "path": "/predict"}
            log.write_entry({**log.start_entry(), **fields})
        before = read_all(r)
        await asyncio.sleep(0.05)  # past flush_after_s: the scheduled flush has run
        return before, read_all(r)

    before, after = asyncio.run(serve())
    assert before == b""
    lines = [json.loads(x) for x in after.splitlines()]
    assert [x["request_id"] for x in lines] == ["id-0", "id-1", "id-2"]
    first = lines[0]
    assert (first["level"], first["logger"], first["message"]) == (
        "info",
        "modelgate.access",
        "request",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])


def test_each_write_is_at_most_pipe_buf_and_ends_on_a_line() -> None:
    r, w = os.pipe()
    log = AccessLog(fd=w)
    writes: list[bytes] = []
    log._write = writes.append  # type: ignore[method-assign]
    for i in range(100):  # ~100 bytes each: flushed every time 4 KiB are waiting
        fields = {"request_id": f"{i:032x}", "path": "/models/churn/predict"}
        log.write_entry({**log.start_entry(), **fields})
    log.flush()
    assert len(writes) >= 2
    assert all(len(chunk) <= PIPE_BUF and chunk.endswith(b"\n") for chunk in writes)
    ids = [json.loads(x)["request_id"] for chunk in writes for x in chunk.splitlines()]
    assert ids == [f"{i:032x}" for i in range(100)]
    os.close(r)
    os.close(w)


def test_a_log_level_above_info_turns_access_lines_off() -> None:
    root = logging.getLogger()
    before = root.level
    try:
        configure_logging("WARNING")
        assert not AccessLog().enabled
        configure_logging("INFO")
        assert AccessLog().enabled
    finally:
        root.setLevel(before)
