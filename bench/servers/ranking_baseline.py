"""S6's baseline: ranking as the feed-ranking tutorial first writes it. FastAPI, a pydantic
request, redis-py's asyncio client "querying the feature store" with one ``HGETALL`` per
entity (the user, then each item, each awaited in turn), the rows assembled in Python,
the model in eager torch (its ``nn.Module`` class with the trained weights), all in an
``async def`` handler.

Run (S6 runs three of these behind the stack's nginx, as the stack runs its replicas):
  BENCH_MODEL_DIR=models/feed/1 BENCH_REDIS_URL=redis://… BENCH_HASH_PREFIX=bench:feat \
    gunicorn -k uvicorn.workers.UvicornWorker bench.servers.ranking_baseline:app

The features are Redis hashes ``{BENCH_HASH_PREFIX}:{user|item}:{id}`` → ``{feature:
value}``, written by the bench's setup (bench/run.py, write_hashes) from the ranker's
shipped CSV files. An id with no hash gets the manifest's defaults, as in modelgate.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import redis.asyncio as aioredis
import torch
from fastapi import FastAPI
from pydantic import BaseModel

import bench.build_bench_model  # noqa: F401  (puts scripts/ on sys.path, for build_ranker)

# isort: split
from build_ranker import Ranker


class Context(BaseModel):
    hour_of_day: int
    day_of_week: int
    device: Literal["mobile", "desktop", "tablet"]


class RankRequest(BaseModel):
    user_id: int
    item_ids: list[int]
    context: Context
    top_k: int | None = None


def _load() -> tuple[dict[str, Any], torch.nn.Module]:
    model_dir = Path(os.environ["BENCH_MODEL_DIR"])
    manifest = json.loads((model_dir / "model.json").read_text())
    weights = torch.export.load(str(model_dir / manifest["file"])).module().state_dict()
    n = len(weights["mean"])
    net = Ranker(np.zeros(n), np.ones(n))  # mean and std: buffers, in the weights
    net.load_state_dict(weights)
    return manifest, net.eval()


MANIFEST, MODEL = _load()
SPEC = MANIFEST["ranking"]
DEVICES: list[str] = next(f["values"] for f in SPEC["context"] if f["name"] == "device")
torch.set_num_threads(1)
PREFIX = os.environ["BENCH_HASH_PREFIX"]
store = aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"], decode_responses=True)
app = FastAPI(title="ranking baseline")


def features(entity: str, stored: dict[str, str]) -> list[float]:
    return [float(stored.get(f["name"], f["default"])) for f in SPEC[entity]]


@app.get("/ready")
async def ready() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/rank")
async def rank(request: RankRequest) -> dict[str, Any]:
    user = features("user", await store.hgetall(f"{PREFIX}:user:{request.user_id}"))
    rows = []
    for item_id in request.item_ids:
        item = features("item", await store.hgetall(f"{PREFIX}:item:{item_id}"))
        c = request.context
        device = [1.0 if d == c.device else 0.0 for d in DEVICES]
        rows.append([*user, *item, float(c.hour_of_day), float(c.day_of_week), *device])
    with torch.no_grad():
        scores = MODEL(torch.tensor(rows, dtype=torch.float32)).tolist()
    ranked = sorted(zip(request.item_ids, scores, strict=True), key=lambda p: -p[1])
    top = ranked[: request.top_k] if request.top_k else ranked
    return {
        "user_id": request.user_id,
        "predictions": [{"item_id": i, "score": s, "rank": r} for r, (i, s) in enumerate(top, 1)],
        "model_name": MANIFEST["name"],
        "model_version": MANIFEST["version"],
    }
