"""``POST /rank`` against a real replica and a real redis-server: the demo ranker's features
loaded with ``modelgate features load``, and the answers compared with the exported model
run directly in torch on rows assembled here from the CSV files."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import redis

from modelgate.client import APIError, AsyncClient, Client, Ranking
from modelgate.edge.responses import documented
from modelgate.inference.manifest import read_manifest
from modelgate.inference.runtime import load_model
from tests.conftest import (
    RedisServer,
    Server,
    commandstats,
    start_redis,
    start_replica,
    stop_process,
    wait_until,
)
from tests.integration.test_ranking_store import (
    CONTEXT,
    SET,
    Demo,
    csv_values,
    eager,
    expected_rows,
    load_cli,
)
from tests.unit.test_response_docs import _assert_keys as assert_keys

pytestmark = pytest.mark.integration


@dataclass
class Served:
    demo: Demo
    replica: Server
    log_dir: Path


@pytest.fixture(scope="module")
def served(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One replica (one worker) serving the demo ranker and one classifier, features loaded."""
    repo = tmp_path_factory.mktemp("rank") / "models"
    shutil.copytree(demo_models / "feed", repo / "feed")
    shutil.copytree(demo_models / "iris", repo / "iris")
    log_dir = tmp_path_factory.mktemp("predlog")
    server: RedisServer = start_redis()
    replica = None
    try:
        version_dir = repo / "feed" / "1"
        for entity in ("user", "item"):
            load_cli(server.url, entity, version_dir / "features" / f"{entity}.csv")
        replica = start_replica(
            repo,
            tmp_path_factory.mktemp("logs"),
            workers=1,
            env={
                "MODELGATE_REDIS_URL": server.url,
                "MODELGATE_PREDICTION_LOG__DIR": str(log_dir),
                "MODELGATE_DEFAULT_MODEL": "iris",
                "MODELGATE_CACHE__ENABLED": "true",
            },
        )
        demo = Demo(
            server,
            load_model(version_dir, read_manifest(version_dir)),
            version_dir,
            csv_values(version_dir / "features" / "user.csv"),
            csv_values(version_dir / "features" / "item.csv"),
        )
        yield Served(demo, replica, log_dir)
    finally:
        if replica is not None:
            stop_process(replica.proc)
        stop_process(server.proc)


def post(served: Served, path: str, body: Any) -> httpx.Response:
    return httpx.post(served.replica.url + path, json=body, timeout=10)


def test_rank_answers_the_torch_scores_in_order(served: Served) -> None:
    unknown = 10**9
    items = [3, 999, 42, unknown, 0, 517, 250, 8]
    body = {"user_id": 7, "item_ids": items, "context": CONTEXT, "top_k": 5}
    r = post(served, "/models/feed/rank", body)
    assert r.status_code == 200, r.text
    answer = r.json()
    scores = eager(served.demo, expected_rows(served.demo, 7, items, served.demo.items))
    best = np.argsort(-scores, kind="stable")[:5]
    got = answer["predictions"]
    assert [p["item_id"] for p in got] == [items[i] for i in best]
    assert [p["rank"] for p in got] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([p["score"] for p in got], scores[best], rtol=1e-5, atol=1e-6)
    assert answer["user_id"] == 7
    assert answer["defaults_used"] == {"user": False, "items": [unknown]}
    assert (answer["model_name"], answer["model_version"]) == ("feed", "1")
    assert answer["request_id"] == r.headers["x-request-id"]
    assert r.headers["x-model-name"] == "feed" and int(r.headers["x-batch-size"]) >= 0
    assert answer["latency_ms"] >= 0 and answer["timestamp"].endswith("Z")


def test_default_ranker_and_every_item_without_top_k(served: Served) -> None:
    body = {"user_id": 5_000_000, "item_ids": [1, 2, 3], "context": CONTEXT}
    r = post(served, "/rank", body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model_name"] == "feed"
    assert sorted(p["item_id"] for p in answer["predictions"]) == [1, 2, 3]
    scores = [p["score"] for p in answer["predictions"]]
    assert scores == sorted(scores, reverse=True)
    assert answer["defaults_used"] == {"user": True, "items": []}
    # The answer has exactly the fields /docs lists for it (responses.py).
    schema, _, _, _ = documented()[("POST", "/rank")]
    assert_keys(schema, answer, "POST /rank")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": -1, "item_ids": [1]}, "user_id"),
        ({"user_id": 1, "item_ids": []}, "item_ids"),
        ({"user_id": 1, "item_ids": [1, 1]}, "item_ids[1]"),
        ({"user_id": 1, "item_ids": list(range(101))}, "item_ids"),
        ({"user_id": 1, "item_ids": [1], "context": {"weather": "rain"}}, "context.weather"),
        ({"user_id": 1, "item_ids": [1], "context": {"device": "tv"}}, "context.device"),
    ],
)
def test_bad_requests_are_422s_naming_the_field(served: Served, body: Any, field: str) -> None:
    r = post(served, "/models/feed/rank", body)
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]], r.text


def test_a_ranker_is_refused_on_prediction_routes_and_a_classifier_on_rank(
    served: Served,
) -> None:
    width = len(served.demo.model.manifest.inputs)
    native = post(served, "/models/feed/predict", {"features": [0.0] * width})
    assert native.status_code == 422 and "ranking model" in native.text, native.text
    v2 = post(
        served,
        "/v2/models/feed/infer",
        {"inputs": [{"name": "input", "shape": [1, width], "datatype": "FP32",
                     "data": [0.0] * width}]},
    )  # fmt: skip
    assert 400 <= v2.status_code < 500, v2.text
    v1 = post(served, "/v1/models/feed:predict", {"instances": [[0.0] * width]})
    assert 400 <= v1.status_code < 500, v1.text
    wrong = post(served, "/models/iris/rank", {"user_id": 1, "item_ids": [1]})
    assert wrong.status_code == 422 and "model" in [e["field"] for e in wrong.json()["errors"]]


def test_rank_skips_the_prediction_cache_that_a_classifier_uses(served: Served) -> None:
    """The cache is on in this replica; rank requests leave it alone (service.py says
    why), a classifier's predictions beside them use it. Only the cache's own commands are
    compared: the replica's fleet control talks to Redis on its own clock."""
    url = served.demo.redis.url
    cache_commands = ("cmdstat_mget", "cmdstat_set")  # rediscache.py's lookups and writes

    def calls(stats: dict[str, Any]) -> dict[str, int]:
        return {c: int(stats.get(c, {}).get("calls", 0)) for c in cache_commands}

    before = commandstats(url)
    body = {"user_id": 11, "item_ids": [4, 5, 6], "context": CONTEXT}
    for _ in range(2):
        r = post(served, "/models/feed/rank", body)
        assert r.status_code == 200 and r.headers["x-cache"] == "MISS", r.text
    after = commandstats(url)
    assert calls(after) == calls(before)

    row = {"features": [5.1, 3.5, 1.4, 0.2]}
    assert post(served, "/models/iris/predict", row).headers["x-cache"] == "MISS"
    assert post(served, "/models/iris/predict", row).headers["x-cache"] == "HIT"
    spent = calls(after)
    # The SET goes out on the event loop's next turn, after the answer: polled for.
    wait_until(
        lambda: all(n > spent[c] for c, n in calls(commandstats(url)).items()),
        10,
        "the classifier's cache lookup and write",
    )


def test_metrics_and_the_prediction_log(served: Served) -> None:
    body = {"user_id": 9, "item_ids": [1, 2, 10**9], "context": CONTEXT}
    r = post(served, "/models/feed/rank", body)
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]

    def logged() -> list[dict[str, Any]]:
        lines = [
            orjson.loads(x)
            for f in served.log_dir.glob("*.jsonl")
            for x in f.read_bytes().splitlines()
        ]
        return [x for x in lines if x["request_id"] == rid]

    wait_until(lambda: bool(logged()), 20, "the prediction-log line")
    (line,) = logged()
    assert (line["model"], line["version"], line["user_id"]) == ("feed", "1", 9)
    assert line["item_ids"] == [1, 2, 10**9] and line["context"] == CONTEXT
    assert line["defaults_used"] == {"user": False, "items": [10**9]}
    by_item = {p["item_id"]: p for p in r.json()["predictions"]}
    assert line["ranks"] == [by_item[i]["rank"] for i in line["item_ids"]]
    assert line["scores"] == [by_item[i]["score"] for i in line["item_ids"]]
    text = httpx.get(served.replica.url + "/metrics", timeout=10).text
    assert 'modelgate_feature_lookups_total{entity="item",result="default"}' in text
    assert "modelgate_rank_items_bucket" in text
    assert "modelgate_feature_fetch_seconds_bucket" in text


def test_missing_features_are_a_503(served: Served) -> None:
    client = redis.Redis.from_url(served.demo.redis.url)
    keys = list(client.scan_iter(f"*{SET}*"))
    saved = {k: client.dump(k) for k in keys}
    client.delete(*keys)
    try:
        r = post(served, "/models/feed/rank", {"user_id": 1, "item_ids": [1], "context": CONTEXT})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
    finally:
        for k, v in saved.items():
            client.restore(k, 0, v, replace=True)


def test_the_python_client_ranks_sync_and_async(served: Served) -> None:
    """modelgate.client's rank (issue 24): typed items in score order, the same as the
    HTTP answer, from both clients."""
    items = [3, 42, 10**9, 517]
    raw = post(served, "/models/feed/rank", {"user_id": 7, "item_ids": items, "context": CONTEXT})
    expected = [(p["item_id"], p["rank"]) for p in raw.json()["predictions"]]
    with Client(served.replica.url) as mg:
        ranking = mg.rank(7, items, context=CONTEXT, model="feed", request_id="client-rank-1")
    assert [(i.item_id, i.rank) for i in ranking.items] == expected
    assert ranking.item_defaults == [10**9] and not ranking.user_default
    assert (ranking.model_name, ranking.model_version) == ("feed", "1")
    assert ranking.request_id == "client-rank-1"

    async def ask() -> Ranking:
        async with AsyncClient(served.replica.url) as mg:
            return await mg.rank(7, items, context=CONTEXT, top_k=2)

    top = asyncio.run(ask())
    assert [(i.item_id, i.rank) for i in top.items] == expected[:2]
    with Client(served.replica.url) as mg, pytest.raises(APIError) as refused:
        mg.rank(7, [1, 1], model="feed")
    assert refused.value.status_code == 422
