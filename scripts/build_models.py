"""Build the demo model repository deterministically: ``make models``.

* ``churn`` — the tutorials' 10 named customer features, binary (stays / churns), trained
  on a synthetic but learnable data set. Version 1 is a logistic regression exported as
  TorchScript; version 2 an MLP exported with torch.export (.pt2). Both bake the feature
  scaling (training mean/std) into the graph so serving can't drift from training.
* ``iris`` — 4 features, 3 named classes, trained on the real Iris data (scikit-learn's
  bundled copy), exported with torch.export.
* ``feed`` — the demo ranker, task ``ranking``, with its feature files (build_ranker.py);
  ``/rank`` answers with it. It never becomes the model ``/predict`` runs
  (``ModelRepository.default_name`` skips rankers).

Seeds, a single torch thread and deterministic algorithms make every run produce the same
weights and byte-identical model files, so their sha256 is reproducible.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelgate.observability.drift import reference_from_rows

SEED = 20261122
CREATED_AT = "2026-11-22T00:00:00Z"  # fixed so that rebuilt manifests are identical

CHURN_INPUTS: list[dict[str, Any]] = [
    {
        "name": "age",
        "dtype": "int",
        "min": 18,
        "max": 100,
        "example": 35,
        "description": "customer age in years",
    },
    {
        "name": "income",
        "dtype": "float",
        "min": 0,
        "max": 10_000_000,
        "example": 75000.0,
        "description": "yearly income",
    },
    {"name": "credit_score", "dtype": "int", "min": 300, "max": 850, "example": 680},
    {"name": "num_purchases", "dtype": "int", "min": 0, "max": 100_000, "example": 24},
    {"name": "account_age_days", "dtype": "int", "min": 0, "max": 36_500, "example": 730},
    {"name": "avg_transaction", "dtype": "float", "min": 0, "max": 1_000_000, "example": 85.5},
    {"name": "num_returns", "dtype": "int", "min": 0, "max": 100_000, "example": 2},
    {"name": "is_premium", "dtype": "bool", "example": False},
    {
        "name": "region",
        "dtype": "int",
        "min": 0,
        "max": 4,
        "example": 2,
        "description": "region code 0..4",
    },
    {
        "name": "category_preference",
        "dtype": "int",
        "min": 0,
        "max": 9,
        "example": 3,
        "description": "favourite product category 0..9",
    },
]

IRIS_INPUTS: list[dict[str, Any]] = [
    {"name": n, "dtype": "float", "min": 0, "max": 30, "example": e, "description": f"{n} in cm"}
    for n, e in (
        ("sepal_length", 5.1),
        ("sepal_width", 3.5),
        ("petal_length", 1.4),
        ("petal_width", 0.2),
    )
]


class Scaled(nn.Module):
    """Standardise with the training set's statistics, run the net, turn logits into
    probabilities: the whole serving contract in one graph."""

    def __init__(self, net: nn.Module, mean: np.ndarray, std: np.ndarray, binary: bool) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.net = net
        self.binary = binary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net((x - self.mean) / self.std)
        if self.binary:
            return torch.sigmoid(logits).squeeze(-1)
        return torch.softmax(logits, dim=-1)


def synthetic_churn(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    age = rng.integers(18, 80, n)
    income = np.round(rng.lognormal(11, 0.5, n), 2)
    credit = rng.integers(300, 851, n)
    purchases = rng.poisson(20, n)
    account_age = rng.integers(0, 3650, n)
    avg_tx = np.round(rng.gamma(2.0, 40.0, n), 2)
    returns = rng.poisson(2, n)
    premium = rng.random(n) < 0.3
    region = rng.integers(0, 5, n)
    category = rng.integers(0, 10, n)
    x = np.stack(
        [age, income, credit, purchases, account_age, avg_tx, returns, premium, region, category],
        axis=1,
    ).astype(np.float32)
    z = (
        -0.9 * (purchases - 20) / 4.5
        - 1.1 * (account_age - 1825) / 1054
        + 0.8 * (returns - 2) / 1.4
        - 1.0 * premium
        - 0.5 * (credit - 575) / 159
        + 0.6 * (region == 3)
        + 0.3
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float32)
    return x, y


def train(
    model: nn.Module, x: np.ndarray, y: np.ndarray, binary: bool, epochs: int, lr: float
) -> None:
    xt = torch.tensor(x)
    yt = torch.tensor(y) if binary else torch.tensor(y, dtype=torch.long)
    loss_fn: nn.Module = nn.BCEWithLogitsLoss() if binary else nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        opt.zero_grad()
        out = model(xt)
        loss = loss_fn(out.squeeze(-1) if binary else out, yt)
        loss.backward()
        opt.step()
    model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, binary: bool) -> float:
    with torch.inference_mode():
        out = model(torch.tensor(x))
    pred = (out >= 0.5).float() if binary else out.argmax(dim=-1).float()
    return round(float((pred.numpy() == y).mean()), 4)


def export(model: nn.Module, n_features: int, fmt: str, path: Path) -> None:
    example = torch.zeros(8, n_features)
    if fmt == "torchscript":
        torch.jit.save(torch.jit.trace(model, example), str(path))
        return
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    # No sample inputs in the archive: torch stores them as a pickle, and modelgate
    # refuses to unpickle anything from a model directory beyond weights_only's loader.
    program.example_inputs = None  # type: ignore[assignment]
    torch.export.save(program, str(path))


def write_version(
    root: Path,
    manifest: dict[str, Any],
    model: nn.Module,
    fmt: str,
) -> None:
    version_dir = root / manifest["name"] / manifest["version"]
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    filename = "model.pt2" if fmt == "torch_export" else "model.ts"
    export(model, len(manifest["inputs"]), fmt, version_dir / filename)
    sha = hashlib.sha256((version_dir / filename).read_bytes()).hexdigest()
    full = {**manifest, "format": fmt, "file": filename, "sha256": sha}
    (version_dir / "model.json").write_text(json.dumps(full, indent=2) + "\n")


def split(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    order = rng.permutation(len(x))
    cut = int(len(x) * 0.8)
    tr, te = order[:cut], order[cut:]
    return x[tr], y[tr], x[te], y[te]


def build_churn(root: Path) -> None:
    rng = np.random.default_rng(SEED)
    x, y = synthetic_churn(6000, rng)
    x_train, y_train, x_test, y_test = split(x, y, rng)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    n = x.shape[1]
    common = {
        "name": "churn",
        "task": "binary_classification",
        "inputs": CHURN_INPUTS,
        "outputs": {"classes": ["stays", "churns"]},
    }
    versions = [
        ("1", "torchscript", lambda: nn.Linear(n, 1), 300, 0.05, "logistic regression"),
        (
            "2",
            "torch_export",
            lambda: nn.Sequential(
                nn.Linear(n, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1)
            ),
            400,
            0.01,
            "MLP 10-32-16-1",
        ),
    ]
    # What the model saw in training, per input: served inputs are scored against it.
    reference = reference_from_rows(
        x_train, [i["name"] for i in CHURN_INPUTS], f"churn training rows, seed {SEED}"
    ).model_dump()
    for version, fmt, make_net, epochs, lr, arch in versions:
        torch.manual_seed(SEED + int(version))  # before the net exists: its init is seeded
        model = Scaled(make_net(), mean, std, binary=True)
        train(model, x_train, y_train, True, epochs, lr)
        write_version(
            root,
            {
                **common,
                "version": version,
                "description": f"Customer churn, {arch}.",
                "metadata": {
                    "created_at": CREATED_AT,
                    "architecture": arch,
                    "training": {
                        "data": f"synthetic churn, seed {SEED}",
                        "train_rows": len(x_train),
                        "heldout_rows": len(x_test),
                        "heldout_accuracy": accuracy(model, x_test, y_test, True),
                        "epochs": epochs,
                    },
                },
                "reference": reference,
            },
            model,
            fmt,
        )


def build_iris(root: Path) -> None:
    from sklearn.datasets import load_iris  # dev dependency, bundled data: no download

    data = load_iris()
    rng = np.random.default_rng(SEED)
    x = data.data.astype(np.float32)
    y = data.target.astype(np.float32)
    x_train, y_train, x_test, y_test = split(x, y, rng)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    torch.manual_seed(SEED)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    model = Scaled(net, mean, std, binary=False)
    train(model, x_train, y_train, False, 500, 0.02)
    write_version(
        root,
        {
            "name": "iris",
            "version": "1",
            "task": "multiclass_classification",
            "description": "Iris species from flower measurements, MLP 4-16-3.",
            "inputs": IRIS_INPUTS,
            "outputs": {"classes": [str(c) for c in data.target_names]},
            "metadata": {
                "created_at": CREATED_AT,
                "training": {
                    "data": "Iris (scikit-learn bundled copy)",
                    "train_rows": len(x_train),
                    "heldout_rows": len(x_test),
                    "heldout_accuracy": accuracy(model, x_test, y_test, False),
                },
            },
            "reference": reference_from_rows(
                x_train, [i["name"] for i in IRIS_INPUTS], "Iris training rows"
            ).model_dump(),
        },
        model,
        "torch_export",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    build_churn(args.out)
    build_iris(args.out)
    from build_ranker import build_ranker  # this script's directory is on sys.path

    build_ranker(args.out)
    for manifest in sorted(args.out.glob("*/*/model.json")):
        m = json.loads(manifest.read_text())
        t = m["metadata"]["training"]
        if "heldout_auc" in t:
            base = t["baseline_popularity_auc"]
            score = f"held-out AUC {t['heldout_auc']}, popularity baseline {base}"
        else:
            score = f"held-out accuracy {t['heldout_accuracy']}"
        print(f"{m['name']} v{m['version']} ({m['format']}): {score}")  # noqa: T201


if __name__ == "__main__":
    main()
