"""The baseline: the tutorial shape. FastAPI, a pydantic model of the named features, the
model loaded once, torch.no_grad() inference per request in an async handler.
Run: BENCH_MODEL_DIR=<models/name/version> uvicorn bench.servers.baseline:app --no-access-log

The model runs as a tutorial runs it: its own ``nn.Module`` class in eager mode, with the
trained weights loaded into it. Calling ``ExportedProgram.module()`` instead would cost the
baseline ~160 µs per request for the tiny churn MLP (every aten op dispatched from Python,
behind input guards) -- a handicap of the file format, not of the tutorial, that would
flatter every ratio against it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI
from pydantic import BaseModel, create_model
from torch import nn

from bench.build_bench_model import bench_mlp

MODEL_DIR = Path(os.environ["BENCH_MODEL_DIR"])
MANIFEST = json.loads((MODEL_DIR / "model.json").read_text())
NAMES = [i["name"] for i in MANIFEST["inputs"]]
TYPES = {"float": float, "int": int, "bool": bool}


def tutorial_module(name: str) -> nn.Module:
    """The model's class, as the training code defines it (weights come from the file)."""
    if name == "bench-mlp":
        return bench_mlp()
    if name == "churn":
        from build_models import Scaled  # scripts/, on sys.path via bench.build_bench_model

        net = nn.Sequential(
            nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1)
        )
        return Scaled(net, np.zeros(10), np.ones(10), binary=True)
    raise SystemExit(f"baseline: no tutorial class for model {name!r}")


if MANIFEST["format"] == "torchscript":
    model: Any = torch.jit.load(str(MODEL_DIR / MANIFEST["file"]))
else:
    weights = torch.export.load(str(MODEL_DIR / MANIFEST["file"])).module().state_dict()
    model = tutorial_module(MANIFEST["name"])
    model.load_state_dict(weights)
model.eval()
torch.set_num_threads(1)

Features = create_model(  # type: ignore[call-overload]
    "Features", **{i["name"]: (TYPES[i["dtype"]], ...) for i in MANIFEST["inputs"]}
)


class PredictRequest(BaseModel):
    features: Features  # type: ignore[valid-type]


app = FastAPI(title="baseline")


@app.post("/predict")
async def predict(request: PredictRequest) -> dict[str, Any]:
    x = torch.tensor([[float(getattr(request.features, n)) for n in NAMES]], dtype=torch.float32)
    with torch.no_grad():
        out = model(x)
    if MANIFEST["task"] == "binary_classification":
        p = float(out.reshape(-1)[0])
        return {"prediction": int(p >= 0.5), "probability": p}
    probs = out.reshape(-1).tolist()
    return {"prediction": int(torch.argmax(out)), "probabilities": probs}
