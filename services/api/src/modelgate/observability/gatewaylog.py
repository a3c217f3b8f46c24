"""The gateway's answers counted by status code: nginx's metrics log as Prometheus metrics.

nginx writes one line per answer in its ``modelgate_metrics`` format
(infra/nginx/templates/default.conf.template) as syslog over UDP, e.g.
``<190>Dec  2 02:17:17 modelgate: 502 gateway``. ``modelgate gateway-exporter`` receives
them, counts them by status code and by who produced the answer (``replica``: passed on;
``gateway``: nginx's own), and serves the counts at ``/metrics`` as
``modelgate_gateway_responses_total{status, answered_by}``.

Why a step of our own rather than mtail, Debian's log-to-metrics tool: bookworm's mtail
(3.0.0~rc50) takes one UDP datagram per poll of its input (measured here: 256 of 3,000
lines counted when sent at full speed, even with ``--poll_interval=1ms``), and tailing a
file instead would need a file that grows without end in the gateway's container. This
is one blocking read and one regular expression per line, in the api image.

UDP never blocks an nginx worker: while this process is down or behind, lines are lost
and serving goes on. The kernel counts what it dropped at this socket; that is exported
too (``modelgate_gateway_log_dropped_total``), so a loss shows instead of hiding.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

# The tail of a line: the status (three digits, 100-599) and who answered. Both label
# values come from this fixed grammar, so the label set stays small whatever arrives.
_LINE = re.compile(rb": ([1-5][0-9]{2}) (gateway|replica)\n?\Z")
# Far above a line's size (~50 bytes): a longer datagram is malformed, never split.
MAX_DATAGRAM = 2048
# Room for the lines of a batch and for a burst while the reader is descheduled (the
# kernel caps it at net.core.rmem_max: ~500 lines with Linux's default).
RECEIVE_BUFFER = 4 << 20
BATCH_S = 0.005


def parse(datagram: bytes) -> tuple[str, str] | None:
    """``(status, answered_by)`` of one syslog line, or None if it is not one of ours."""
    match = _LINE.search(datagram)
    return (match.group(1).decode(), match.group(2).decode()) if match else None


# Series that exist at 0 from the start: rate() sees no increase in a series' first
# sample, so without them the first burst of, say, 502s (every replica down at once)
# would be invisible to the error-rate panels and the alert. nginx's own answers, and
# what the replicas answer most. Others appear with their first line.
KNOWN = {
    "gateway": ("400", "404", "408", "413", "429", "499", "500", "502", "503", "504"),
    "replica": ("200", "400", "401", "403", "404", "413", "422", "429", "499", "500", "503"),
}


class AnswerCounts:
    """Counts by (status, answered_by), written by the receiving thread and read by the
    scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {(s, by): 0 for by, statuses in KNOWN.items() for s in statuses}
        self.malformed = 0

    def add(self, datagram: bytes) -> None:
        key = parse(datagram)
        with self._lock:
            if key is None:
                self.malformed += 1
            else:
                self._counts[key] = self._counts.get(key, 0) + 1

    def snapshot(self) -> tuple[dict[tuple[str, str], int], int]:
        with self._lock:
            return dict(self._counts), self.malformed


def kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped at ``sock`` (its receive buffer was full): the last
    column of its line in /proc/net/udp, found by the socket's inode. None elsewhere."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 12 and fields[9] == inode:
            return int(fields[-1])
    return None


class GatewayAnswers(Collector):
    """What a scrape of the exporter sees."""

    def __init__(self, counts: AnswerCounts, sock: socket.socket) -> None:
        self.counts = counts
        self.sock = sock

    def collect(self) -> Iterator[Metric]:
        counts, malformed = self.counts.snapshot()
        answers = CounterMetricFamily(
            "modelgate_gateway_responses",
            "Answers of the gateway by status code; answered_by: replica (passed on) or "
            "gateway (nginx's own)",
            labels=["status", "answered_by"],
        )
        for (status, by), n in sorted(counts.items()):
            answers.add_metric([status, by], n)
        yield answers
        yield CounterMetricFamily(
            "modelgate_gateway_log_malformed",
            "Datagrams that were not a line of the gateway's metrics log",
            value=malformed,
        )
        drops = kernel_drops(self.sock)
        if drops is not None:
            yield CounterMetricFamily(
                "modelgate_gateway_log_dropped",
                "Lines the kernel dropped before this exporter read them (it was behind)",
                value=drops,
            )


def address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as a socket address."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def serve(udp: tuple[str, int], listen: tuple[str, int]) -> None:
    """Receive lines on ``udp`` and serve the counts on ``listen`` until killed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.bind(udp)
    counts = AnswerCounts()
    registry = CollectorRegistry()
    registry.register(GatewayAnswers(counts, sock))
    start_http_server(listen[1], addr=listen[0], registry=registry)
    while True:
        counts.add(sock.recv(MAX_DATAGRAM))  # blocks until the next line
        drain(sock, counts)
        # A thread woken per line costs ~30 µs of CPU; woken at most every BATCH_S, the
        # lines in between (buffered by the kernel) cost ~3 µs each. Counts are scraped
        # every few seconds, so 5 ms late is never seen.
        time.sleep(BATCH_S)


def drain(sock: socket.socket, counts: AnswerCounts) -> None:
    """Count every line already waiting at ``sock``."""
    while True:
        try:
            counts.add(sock.recv(MAX_DATAGRAM, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return
