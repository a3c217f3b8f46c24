"""``modelgate gateway-exporter``, run for real: lines of nginx's metrics log sent over
UDP are counted by status code and by who answered, and anything else is counted as
malformed, never as an answer. (With nginx in front: tests/stack/test_alerts.py.)"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelgate.observability.gatewaylog import address, parse
from tests.conftest import VENV_BIN, stop_process, wait_until
from tests.ports import free_port


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        (b"<190>Dec  2 02:17:17 modelgate: 502 gateway", ("502", "gateway")),
        (b"<190>Dec  2 02:17:17 modelgate: 200 replica\n", ("200", "replica")),
        (b"<190>Dec  2 02:17:17 modelgate: 499 replica", ("499", "replica")),
        (b"<190>Dec  2 02:17:17 modelgate: 600 gateway", None),  # not an HTTP status
        (b"<190>Dec  2 02:17:17 modelgate: 20 gateway", None),
        (b"<190>Dec  2 02:17:17 modelgate: 200 someone", None),  # only two kinds
        (b"<190>Dec  2 02:17:17 modelgate: 200 replica extra", None),
        (b"", None),
    ],
)
def test_parse_accepts_only_the_metrics_log_format(
    line: bytes, parsed: tuple[str, str] | None
) -> None:
    assert parse(line) == parsed


def test_addresses_are_host_and_port() -> None:
    assert address("0.0.0.0:5140") == ("0.0.0.0", 5140)
    for bad in ("5140", ":5140", "host:", "host:99999", "host:x"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            address(bad)


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[tuple[int, str]]:
    udp, http = free_port(), free_port()
    with (tmp_path / "exporter.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "modelgate"),
                "gateway-exporter",
                f"--udp=127.0.0.1:{udp}",
                f"--listen=127.0.0.1:{http}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{http}/metrics"
    try:
        wait_until(lambda: httpx.get(url, timeout=2).status_code == 200, 30, "exporter", proc)
        yield udp, url
    finally:
        stop_process(proc)


def samples(url: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(url, timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_lines_are_counted_by_status_and_who_answered(exporter: tuple[int, str]) -> None:
    port, url = exporter
    sent = {b"200 replica": 300, b"502 gateway": 40, b"429 gateway": 3}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for tail, n in sent.items():
            for _ in range(n):
                s.sendto(b"<190>Dec  2 02:17:17 modelgate: " + tail, ("127.0.0.1", port))
        s.sendto(b"GET /admin HTTP/1.1", ("127.0.0.1", port))  # not ours
    want = {
        'modelgate_gateway_responses_total{answered_by="replica",status="200"}': 300.0,
        'modelgate_gateway_responses_total{answered_by="gateway",status="502"}': 40.0,
        'modelgate_gateway_responses_total{answered_by="gateway",status="429"}': 3.0,
        "modelgate_gateway_log_malformed_total": 1.0,
    }

    def counted() -> bool:
        got = samples(url)
        return all(got.get(name) == value for name, value in want.items())

    wait_until(counted, 10, "every line counted")
    got = samples(url)
    assert got["modelgate_gateway_log_dropped_total"] == 0
    counted = {n: v for n, v in got.items() if n.startswith("modelgate_gateway_responses_total")}
    assert sum(counted.values()) == 343  # nothing else counted …
    # … and the usual answers exist at 0 before their first line, so that rate() sees it
    assert counted['modelgate_gateway_responses_total{answered_by="gateway",status="504"}'] == 0
