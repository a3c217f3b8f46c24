"""Build the bench's `bench-mlp` model: 256 inputs → 1024 → 1024 → 1024 → 10 classes
(softmax), random weights (a fixed seed), as a torch.export archive with its manifest,
next to copies of the demo `churn` and `feed` (S6) models. Inference cost is the point,
not accuracy."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from build_models import CREATED_AT, write_version  # noqa: E402

N_FEATURES = 256
N_CLASSES = 10


def bench_mlp() -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(
        nn.Linear(N_FEATURES, 1024), nn.ReLU(),
        nn.Linear(1024, 1024), nn.ReLU(),
        nn.Linear(1024, 1024), nn.ReLU(),
        nn.Linear(1024, N_CLASSES), nn.Softmax(dim=1),
    ).eval()  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--demo-models", type=Path, default=ROOT / "models")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("churn", "feed"):  # feed: the demo ranker, for S6
        if (out / name).exists():
            shutil.rmtree(out / name)
        shutil.copytree(args.demo_models / name, out / name)
    manifest = {
        "name": "bench-mlp",
        "version": "1",
        "task": "multiclass_classification",
        "description": "Benchmark MLP 256-1024-1024-1024-10, random weights.",
        "inputs": [
            {"name": f"f{i:03d}", "dtype": "float", "example": 0.0} for i in range(N_FEATURES)
        ],
        "outputs": {"classes": [f"c{i}" for i in range(N_CLASSES)]},
        "metadata": {"created_at": CREATED_AT},
    }
    with torch.no_grad():
        write_version(out, manifest, bench_mlp(), "torch_export")


if __name__ == "__main__":
    main()
