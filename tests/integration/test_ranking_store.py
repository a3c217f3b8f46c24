"""The ranking core against a real redis-server: the demo ranker's features loaded with
``modelgate features load``, requests ranked, and the scores compared with the exported
model run directly in torch on rows assembled here from the CSV files."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import redis
import torch

from modelgate.inference.manifest import read_manifest
from modelgate.inference.runtime import LoadedModel, load_model
from modelgate.ranking import load
from modelgate.ranking.features import FeatureStore, FeaturesUnavailable
from modelgate.ranking.keys import Entity
from modelgate.ranking.ranker import Ranker
from tests.conftest import VENV_BIN, RedisServer, commandstats, start_redis, stop_process
from tests.ports import free_port

pytestmark = pytest.mark.integration

SET = "feed_demo"
CONTEXT = {"hour_of_day": 20, "day_of_week": 5, "device": "mobile"}
DEVICES = ["mobile", "desktop", "tablet"]


@dataclass
class Demo:
    redis: RedisServer
    model: LoadedModel
    version_dir: Path
    users: np.ndarray  # the CSV's values, row = id
    items: np.ndarray


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "modelgate"), "features", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def load_cli(url: str, entity: str, path: Path) -> str:
    done = cli("load", "--feature-set", SET, "--entity", entity, "--file", str(path),
               "--redis-url", url)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def csv_values(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)[:, 1:]


@pytest.fixture(scope="module")
def demo(demo_models: Path) -> Iterator[Demo]:
    server = start_redis()
    try:
        version_dir = demo_models / "feed" / "1"
        for entity in ("user", "item"):
            out = load_cli(server.url, entity, version_dir / "features" / f"{entity}.csv")
            assert "made current (was none)" in out
        model = load_model(version_dir, read_manifest(version_dir))
        yield Demo(
            server,
            model,
            version_dir,
            csv_values(version_dir / "features" / "user.csv"),
            csv_values(version_dir / "features" / "item.csv"),
        )
    finally:
        stop_process(server.proc)


def expected_rows(demo: Demo, user: int, items: list[int], items_table: np.ndarray) -> np.ndarray:
    """The model's rows built here, by hand, from the CSV values and the manifest."""
    spec = demo.model.manifest.ranking
    assert spec is not None
    user_default = [float(f.default) for f in spec.user]  # type: ignore[arg-type]
    item_default = [float(f.default) for f in spec.item]  # type: ignore[arg-type]
    u = demo.users[user] if user < len(demo.users) else np.array(user_default, np.float32)
    context = [CONTEXT["hour_of_day"], CONTEXT["day_of_week"]]
    context += [float(d == CONTEXT["device"]) for d in DEVICES]
    rows = [
        [*u, *(items_table[i] if i < len(items_table) else item_default), *context] for i in items
    ]
    return np.array(rows, np.float32)


def eager(demo: Demo, rows: np.ndarray) -> np.ndarray:
    """The exported model run directly in torch, outside modelgate."""
    with torch.inference_mode():
        program = torch.export.load(str(demo.version_dir / "model.pt2"))
        return program.module()(torch.from_numpy(rows)).numpy()  # type: ignore[no-any-return]


def rank(demo: Demo, body: dict[str, Any], url: str | None = None) -> Any:
    async def run() -> Any:
        store = FeatureStore.from_url(url or demo.redis.url, timeout_s=2, breaker_s=5)
        ranker = Ranker(store, max_items=100)
        try:
            request = ranker.parse(demo.model, body)
            assembled = await ranker.assemble(demo.model, request)
            return assembled, ranker.finish(assembled, demo.model.run(assembled.rows)), store
        finally:
            await store.close()

    return asyncio.run(run())


def test_scores_equal_torch_on_the_same_rows(demo: Demo) -> None:
    unknown = 10**9
    items = [3, 999, 42, unknown, 0, 517, 250, 8]
    body = {"user_id": 7, "item_ids": items, "context": CONTEXT, "top_k": 5}
    assembled, result, _ = rank(demo, body)
    rows = expected_rows(demo, 7, items, demo.items)
    np.testing.assert_array_equal(assembled.rows, rows)
    scores = eager(demo, rows)
    best = np.argsort(-scores, kind="stable")[:5]
    assert result.item_ids == [items[i] for i in best]
    np.testing.assert_allclose(result.scores, scores[best], rtol=1e-5, atol=1e-6)
    assert list(result.ranks) == [1, 2, 3, 4, 5]
    assert (result.user_default, result.item_defaults) == (False, (unknown,))


def test_an_unknown_user_gets_the_defaults(demo: Demo) -> None:
    body = {"user_id": 5_000_000, "item_ids": [1, 2, 3], "context": CONTEXT}
    assembled, result, _ = rank(demo, body)
    np.testing.assert_array_equal(
        assembled.rows, expected_rows(demo, 5_000_000, [1, 2, 3], demo.items)
    )
    assert result.user_default and result.item_defaults == ()


def test_one_redis_round_trip_per_request(demo: Demo) -> None:
    body = {"user_id": 11, "item_ids": list(range(100)), "context": CONTEXT}

    async def run(n: int) -> None:
        store = FeatureStore.from_url(demo.redis.url, timeout_s=2, breaker_s=5)
        ranker = Ranker(store)
        request = ranker.parse(demo.model, body)
        await ranker.rank(demo.model, request)  # meets the versions: their columns, once
        before = commandstats(demo.redis.url)
        for _ in range(n):
            await ranker.rank(demo.model, request)
        after = commandstats(demo.redis.url)
        await store.close()
        calls = {
            k.removeprefix("cmdstat_"): after[k]["calls"] - before.get(k, {"calls": 0})["calls"]
            for k in after
            if k not in ("cmdstat_info", "cmdstat_hello")  # the counting client's own
        }
        # One command per request (EVALSHA); the rest is what its script runs in Redis.
        assert {k: v for k, v in calls.items() if v} == {
            "evalsha": n,
            "get": 2 * n,
            "hget": n,
            "hmget": n,
        }

    asyncio.run(run(5))


def test_a_reload_is_idempotent_and_get_reads_back(demo: Demo) -> None:
    out = load_cli(demo.redis.url, "user", demo.version_dir / "features" / "user.csv")
    assert "already current, nothing written" in out and "2,000 users" in out
    got = cli("get", "--feature-set", SET, "--entity", "user", "7", "123456789",
              "--redis-url", demo.redis.url)  # fmt: skip
    assert got.returncode == 0, got.stderr
    first, second = (load.orjson.loads(line) for line in got.stdout.splitlines())
    assert first["user_id"] == 7 and second["features"] is None
    assert list(first["features"].values()) == pytest.approx(demo.users[7].tolist())


def test_the_same_features_as_parquet_are_the_same_version(demo: Demo, tmp_path: Path) -> None:
    """`features load --file x.parquet` reads what the CSV holds: same version, so nothing
    is written again."""
    users = pacsv.read_csv(demo.version_dir / "features" / "user.csv")
    path = tmp_path / "user.parquet"
    pq.write_table(users, path)
    out = load_cli(demo.redis.url, "user", path)
    assert "already current, nothing written" in out and "2,000 users" in out


def test_a_new_version_switches_atomically(demo: Demo, tmp_path: Path) -> None:
    """While a changed item table loads, every request reads one version whole."""
    changed = demo.items.copy()
    changed[:, 0] = 0.5  # every item's CTR
    path = tmp_path / "item.csv"
    ids = np.arange(len(changed))[:, None]
    np.savetxt(path, np.hstack([ids, changed]), delimiter=",", fmt="%.9g", comments="",
               header="item_id,ctr,avg_dwell_time_s,popularity,age_days")  # fmt: skip
    new_version = load.read_table(path, Entity.ITEM).version
    items = [5, 900, 77, 300]
    body = {"user_id": 3, "item_ids": items, "context": CONTEXT}
    client = redis.Redis.from_url(demo.redis.url)
    before = load.get(client, SET, Entity.ITEM, [0])
    assert before is not None and before.version != new_version

    async def run() -> tuple[list[Any], load.LoadReport]:
        store = FeatureStore.from_url(demo.redis.url, timeout_s=2, breaker_s=5)
        ranker = Ranker(store)
        request = ranker.parse(demo.model, body)
        loading = asyncio.create_task(
            asyncio.to_thread(load.load, client, SET, load.read_table(path, Entity.ITEM))
        )
        seen = []
        while not loading.done():
            seen.append(await ranker.assemble(demo.model, request))
        seen.append(await ranker.assemble(demo.model, request))
        await store.close()
        return seen, await loading

    try:
        seen, report = asyncio.run(run())
        assert report.version == new_version and report.previous == before.version
        for assembled in seen:
            table = changed if assembled.feature_versions["item"] == new_version else demo.items
            np.testing.assert_array_equal(assembled.rows, expected_rows(demo, 3, items, table))
        assert seen[-1].feature_versions["item"] == new_version
        _, result, _ = rank(demo, body)
        rows = expected_rows(demo, 3, items, changed)
        np.testing.assert_allclose(sorted(result.scores), sorted(eager(demo, rows)), rtol=1e-5)
        # The old version is kept (a request may be reading it); going back writes nothing.
        back = load.load(
            client, SET, load.read_table(demo.version_dir / "features" / "item.csv", Entity.ITEM)
        )
        assert (back.version, back.written) == (before.version, 0)
    finally:
        client.close()


def test_nothing_loaded_or_no_redis_is_a_503(demo: Demo) -> None:
    body = {"user_id": 1, "item_ids": [1], "context": CONTEXT}
    spec = demo.model.manifest.ranking
    assert spec is not None
    other = demo.model.manifest.model_copy(
        update={"ranking": spec.model_copy(update={"feature_set": "never_loaded"})}
    )
    model = LoadedModel(other, demo.model.module, demo.model.sha256, demo.model.size_bytes)

    async def run(url: str, m: LoadedModel) -> FeatureStore:
        store = FeatureStore.from_url(url, timeout_s=0.5, breaker_s=30)
        ranker = Ranker(store)
        with pytest.raises(FeaturesUnavailable) as info:
            await ranker.rank(m, ranker.parse(m, body))
        assert info.value.status_code == 503 and info.value.headers()["Retry-After"]
        with pytest.raises(FeaturesUnavailable):  # with the breaker open: at once
            await ranker.rank(m, ranker.parse(m, body))
        await store.close()
        return store

    store = asyncio.run(run(demo.redis.url, model))
    assert not store.breaker.is_open  # nothing loaded is not Redis trouble
    with redis.Redis.from_url(demo.redis.url) as client:  # a pointer to no version
        client.set("mgfeat:{never_loaded}:user:current", "../x")
        client.set("mgfeat:{never_loaded}:item:current", "0123456789abcdef")
    store = asyncio.run(run(demo.redis.url, model))
    assert not store.breaker.is_open
    store = asyncio.run(run(f"redis://127.0.0.1:{free_port()}/0", demo.model))
    assert store.breaker.is_open


def test_the_shipped_feature_files_load_at_stack_start(
    demo_models: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    """What ``modelgate stack up`` does once Redis is ready (stack.load_ranking_features),
    and compose's one-shot ``features`` service (``modelgate features load-shipped``)."""
    from modelgate.ranking import seed

    no_ranker = tmp_path / "models"
    shutil.copytree(demo_models / "iris", no_ranker / "iris")
    with redis.Redis.from_url(redis_server.url) as client:
        assert seed.load_shipped(client, no_ranker) == []
        first = {o.what: o for o in seed.load_shipped(client, demo_models)}
    assert set(first) == {f"{SET}/user", f"{SET}/item"}
    assert first[f"{SET}/user"].written == 2000 and first[f"{SET}/item"].written == 1000
    again = cli("load-shipped", "--model-repository", str(demo_models),
                "--redis-url", redis_server.url)  # fmt: skip
    assert again.returncode == 0, again.stderr
    # A restart writes nothing and keeps the versions.
    assert again.stdout.splitlines() == [
        f"{SET}/user: 2,000 rows, version {first[f'{SET}/user'].version}, 0 written",
        f"{SET}/item: 1,000 rows, version {first[f'{SET}/item'].version}, 0 written",
    ]
    # An operator's load since is never rolled back by the shipped files (every
    # Kubernetes pod runs load-shipped in its init container).
    changed = tmp_path / "item.csv"
    lines = (demo_models / "feed" / "1" / "features" / "item.csv").read_text().splitlines()
    changed.write_text("\n".join(lines[:-1]) + "\n")  # one item fewer: a new version
    load_cli(redis_server.url, "item", changed)
    mine = load.read_table(changed, Entity.ITEM).version
    again = cli("load-shipped", "--model-repository", str(demo_models),
                "--redis-url", redis_server.url)  # fmt: skip
    assert again.returncode == 0, again.stderr
    shipped_item = first[f"{SET}/item"].version
    assert f"{SET}/item: version {mine}, loaded since, stays current; shipped version " \
        f"{shipped_item} not loaded" in again.stdout.splitlines()  # fmt: skip
    with redis.Redis.from_url(redis_server.url) as client:
        current = load.get(client, SET, Entity.ITEM, [0])
        assert current is not None and current.version == mine
        # No staging table is left behind, and the loaded table does not expire.
        assert not list(client.scan_iter(match="mgfeat:*:staging:*"))
        table_key = f"mgfeat:{{{SET}}}:item:v:{mine}"
        assert client.exists(table_key) and client.ttl(table_key) == -1
    # Back to the shipped items for whatever else uses this Redis.
    load_cli(redis_server.url, "item", demo_models / "feed" / "1" / "features" / "item.csv")
    missing = cli("load-shipped", "--model-repository", str(tmp_path / "nowhere"),
                  "--redis-url", redis_server.url)  # fmt: skip
    assert missing.returncode == 2 and "no model repository" in missing.stderr
