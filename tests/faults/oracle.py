"""What every fault is checked against, besides its own criterion.

* Every request the client sent got an answer it can classify (``Answer.outcome``).
* The replicas' ``http_requests_total`` for predictions add up to what the gateway sent
  them: the attempts in the gateway's access log that a replica answered (an attempt
  that ended in a connection error or a timeout shows as the gateway's own 502/504).
* Every 2xx prediction's request id is in the prediction log exactly once.
"""

from __future__ import annotations

import json
import re
import statistics
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.faults.load import Answer
from tests.stack.conftest import Stack

PREDICT_ROUTE = "/predict"
_SAMPLE = re.compile(r"^http_requests_total\{([^}]*)\} ([0-9.e+]+)$", re.M)


def outcomes(answers: Iterable[Answer]) -> Counter[str]:
    return Counter(a.outcome for a in answers)


def non_2xx(answers: Iterable[Answer]) -> dict[str, int]:
    return {k: v for k, v in sorted(outcomes(answers).items()) if not k.startswith("2")}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def latency_ms(answers: Iterable[Answer], q: float, ok_only: bool = True) -> float:
    values = [a.latency * 1000 for a in answers if (200 <= a.status < 300 or not ok_only)]
    return round(percentile(values, q), 1)


def between(answers: Iterable[Answer], start: float, end: float) -> list[Answer]:
    return [a for a in answers if start <= a.sent < end]


# --- replica counters against the gateway's access log ---------------------------------


def replica_predictions(url: str) -> int:
    """Prediction requests a replica has counted (all statuses), from its /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for labels, value in _SAMPLE.findall(text):
        if f'handler="{PREDICT_ROUTE}"' in labels:
            total += float(value)
    return int(total)


def fleet_predictions(stack: Stack) -> dict[str, int]:
    return {url: replica_predictions(url) for url in stack.replicas}


def access_offset(stack: Stack) -> int:
    path = stack.dir / "logs" / "gateway-access.log"
    return path.stat().st_size if path.exists() else 0


def access_entries(stack: Stack, offset: int = 0) -> list[dict[str, Any]]:
    """The gateway's JSON access-log entries written since ``offset``."""
    path = stack.dir / "logs" / "gateway-access.log"
    with path.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def gateway_attempts(stack: Stack, offset: int) -> Counter[str]:
    """Per replica (host:port): prediction attempts the gateway made since ``offset``
    that the replica answered, from ``upstream_status`` / ``upstream_addr``."""
    sent: Counter[str] = Counter()
    for entry in access_entries(stack, offset):
        if not entry["uri"].startswith(PREDICT_ROUTE):
            continue
        addrs = re.split(r"\s*[,:]\s+", entry["upstream"])
        codes = re.split(r"\s*[,:]\s+", entry["upstream_status"])
        for addr, code in zip(addrs, codes, strict=False):
            if code.isdigit() and code not in ("502", "504"):
                sent[addr] += 1
    return sent


def gateway_errors(stack: Stack) -> Counter[str]:
    """What nginx's error log says, by kind: the message without its time, ids, client
    and upstream address (e.g. "no live upstreams while connecting to upstream")."""
    path = stack.dir / "logs" / "gateway-error.log"
    kinds: Counter[str] = Counter()
    if not path.exists():
        return kinds
    for line in path.read_text(errors="replace").splitlines():
        found = re.search(r"\] \d+#\d+: (?:\*\d+ )?(.*?)(?:, client: .*)?$", line)
        if found:
            kinds[found.group(1)] += 1
    return kinds


def retried_upstream(stack: Stack, offset: int = 0) -> int:
    """Requests the gateway sent to more than one replica (a race or a dead replica,
    absorbed by ``proxy_next_upstream``) since ``offset``."""
    return sum(1 for entry in access_entries(stack, offset) if "," in entry["upstream"])


def wait_counts_agree(
    stack: Stack, before: dict[str, int], offset: int, timeout: float = 15
) -> tuple[int, int]:
    """(replicas' delta, gateway's attempts) once they agree or ``timeout`` passed (each
    worker writes its sums out 5 ms after it goes idle; nginx logs after answering)."""
    deadline = time.monotonic() + timeout
    while True:
        after = fleet_predictions(stack)
        replicas = sum(after[u] - before[u] for u in stack.replicas)
        gateway = sum(gateway_attempts(stack, offset).values())
        if replicas == gateway or time.monotonic() > deadline:
            return replicas, gateway
        time.sleep(0.2)  # polling interval


# --- the prediction log ------------------------------------------------------------------


def logged_ids(stack: Stack) -> Counter[str]:
    ids: Counter[str] = Counter()
    for path in sorted((stack.dir / "predictions").glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                ids[json.loads(line)["request_id"]] += 1
            except ValueError:
                ids["<torn line>"] += 1
    return ids


def log_check(stack: Stack, answers: Iterable[Answer], timeout: float = 15) -> dict[str, Any]:
    """Every 2xx answer's id logged exactly once: missing and duplicated ids."""
    wanted = {a.request_id for a in answers if 200 <= a.status < 300}
    deadline = time.monotonic() + timeout
    while True:
        ids = logged_ids(stack)
        missing = [i for i in wanted if ids[i] == 0]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # polling interval: the writer hands over every 50 ms
    duplicated = [i for i in wanted if ids[i] > 1]
    return {
        "answered": len(wanted),
        "missing": len(missing),
        "duplicated": len(duplicated),
        "torn": ids["<torn line>"],
    }


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of a replica metric's samples whose labels include ``labels``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? ([0-9.e+-]+)$", re.M)
    for found_labels, value in pattern.findall(text):
        if all(f'{k}="{v}"' in found_labels for k, v in labels.items()):
            total += float(value)
    return total


def fleet_metric(stack: Stack, name: str, **labels: str) -> float:
    return sum(metric(u, name, **labels) for u in stack.replicas)


def read_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))
