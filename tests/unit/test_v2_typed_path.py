"""The V2 JSON request's typed fast path answers exactly what the general path answers.

A body sent with ``Inference-Header-Content-Length`` equal to its length is the same
request read by the general path (a JSON header with no binary data after it); sent
without, the common shapes take the typed path. Every pair must answer the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from modelgate.app import create_app
from modelgate.protocols import v2
from modelgate.settings import Settings

CHURN = [35, 75000.0, 680, 24, 730, 85.5, 2, 0, 2, 3]


def _tensor(data: Any, shape: list[int], **extra: Any) -> dict[str, Any]:
    return {"name": "input", "datatype": "FP32", "shape": shape, "data": data, **extra}


BODIES: list[tuple[str, Any]] = [
    ("one row", {"inputs": [_tensor(CHURN, [1, 10])]}),
    ("two rows", {"inputs": [_tensor(CHURN + CHURN, [2, 10])]}),
    ("nested rows", {"inputs": [_tensor([CHURN, CHURN], [2, 10])]}),
    ("string id", {"id": "abc", "inputs": [_tensor(CHURN, [1, 10])]}),
    ("numeric id", {"id": 7, "inputs": [_tensor(CHURN, [1, 10])]}),
    ("null id", {"id": None, "inputs": [_tensor(CHURN, [1, 10])]}),
    ("binary output asked", {"parameters": {"binary_data_output": True},
                             "inputs": [_tensor(CHURN, [1, 10])]}),
    ("one output", {"inputs": [_tensor(CHURN, [1, 10])], "outputs": [{"name": "prediction"}]}),
    ("unknown keys", {"x": 1, "inputs": [_tensor(CHURN, [1, 10], extra_key=True)]}),
    ("out of bounds", {"inputs": [_tensor([*CHURN[:-1], 1e9], [1, 10])]}),
    ("not whole", {"inputs": [_tensor([35.5, *CHURN[1:]], [1, 10])]}),
    ("boolean value", {"inputs": [_tensor([True, *CHURN[1:]], [1, 10])]}),
    ("huge number", orjson.dumps({"inputs": [_tensor([9, *CHURN[1:]], [1, 10])]}).replace(
        b"[9,", b"[1e400,")),
    ("short data", {"inputs": [_tensor(CHURN[:-1], [1, 10])]}),
    ("wrong name", {"inputs": [{**_tensor(CHURN, [1, 10]), "name": "x"}]}),
    ("wrong datatype", {"inputs": [{**_tensor(CHURN, [1, 10]), "datatype": "FP64"}]}),
    ("boolean shape", {"inputs": [_tensor(CHURN, [True, 10])]}),
    ("two inputs", {"inputs": [_tensor(CHURN, [1, 10]), _tensor(CHURN, [1, 10])]}),
    ("too many rows", {"inputs": [_tensor(CHURN * 2000, [2000, 10])]}),
]  # fmt: skip


@pytest.fixture(scope="module")
def client(demo_models: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_repository=demo_models))) as c:
        yield c


def _answer(client: TestClient, raw: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    r = client.post("/v2/models/churn/infer", content=raw, headers=headers)
    return r.status_code, r.content


TYPED = {"one row", "two rows", "string id", "binary output asked", "unknown keys"}


@pytest.mark.parametrize(("case", "body"), BODIES, ids=[c for c, _ in BODIES])
def test_typed_and_general_paths_answer_alike(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, case: str, body: Any
) -> None:
    taken: list[bool] = []
    fast = v2._fast_decode

    def spy(*args: Any) -> tuple[np.ndarray, Any] | None:
        result = fast(*args)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(v2, "_fast_decode", spy)
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    typed = _answer(client, raw, {"content-type": "application/json"})
    general = _answer(client, raw, {"inference-header-content-length": str(len(raw))})
    assert taken == [case in TYPED]  # the general path's request never tries the typed one
    assert typed == general, case
    if case in TYPED:
        assert typed[0] == 200
