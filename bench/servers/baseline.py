"""The baseline: the tutorial shape. FastAPI, a pydantic model of the named features, the
model loaded once, torch.no_grad() inference per request in an async handler.
Run: BENCH_MODEL_DIR=<models/name/version> uvicorn bench.servers.baseline:app --no-access-log"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI
from pydantic import BaseModel, create_model

MODEL_DIR = Path(os.environ["BENCH_MODEL_DIR"])
MANIFEST = json.loads((MODEL_DIR / "model.json").read_text())
NAMES = [i["name"] for i in MANIFEST["inputs"]]
TYPES = {"float": float, "int": int, "bool": bool}

if MANIFEST["format"] == "torchscript":
    model: Any = torch.jit.load(str(MODEL_DIR / MANIFEST["file"]))
else:
    model = torch.export.load(str(MODEL_DIR / MANIFEST["file"])).module()
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
