"""Build the demo ranker deterministically: ``feed``, task ``ranking`` (``make models``).

Synthetic users, items and a click log with the feed-ranking tutorial's features:

* user: historical CTR, average dwell time, interaction count, days active;
* item: CTR, average dwell time, popularity (views), age in days;
* context: hour of day, day of week, device (one-hot).

Clicks come from a logistic model over hidden traits that the features reveal with
noise, with interactions a popularity ranking can't see (users who read long pieces
click long pieces, long pieces do worse on phones, freshness, evenings). An MLP learns
it; its held-out AUC and a popularity-only baseline's go in the manifest. The user and
item feature tables are written as CSV next to the model (``features/``), the files
``modelgate features load`` takes.

It goes to ``models/`` with the other demo models (build_models.py calls it), so the
stack's ``/rank`` answers with it; the stack loads its feature files into Redis at start
(ranking/seed.py).
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
from sklearn.metrics import roc_auc_score
from torch import nn

SEED = 20261202
CREATED_AT = "2026-12-02T00:00:00Z"  # fixed so that rebuilt manifests are identical
NAME, VERSION, FEATURE_SET = "feed", "1", "feed_demo"
N_USERS, N_ITEMS, N_IMPRESSIONS = 2000, 1000, 60_000
DEVICES = ["mobile", "desktop", "tablet"]
EPOCHS, BATCH = 10, 512

USER = [
    {"name": "historical_ctr", "min": 0, "max": 1, "description": "clicks / impressions"},
    {"name": "avg_dwell_time_s", "min": 0, "max": 3600, "description": "seconds per read"},
    {"name": "interaction_count", "min": 0, "max": 10_000_000},
    {"name": "days_active", "min": 0, "max": 36_500},
]
ITEM = [
    {"name": "ctr", "min": 0, "max": 1, "description": "clicks / impressions"},
    {"name": "avg_dwell_time_s", "min": 0, "max": 3600, "description": "seconds per read"},
    {"name": "popularity", "min": 0, "max": 1e12, "description": "views, last 30 days"},
    {"name": "age_days", "min": 0, "max": 36_500},
]
CONTEXT: list[dict[str, Any]] = [
    {"name": "hour_of_day", "min": 0, "max": 23},
    {"name": "day_of_week", "min": 0, "max": 6, "description": "0: Monday"},
    {"name": "device", "kind": "categorical", "values": DEVICES, "encoding": "one_hot"},
]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-z)))


def f32(x: np.ndarray) -> np.ndarray:
    """As a CSV written with %.9g reads back: float32 exactly."""
    return x.astype(np.float32)


def synthetic(rng: np.random.Generator) -> dict[str, np.ndarray]:
    engaged, long_reader = rng.normal(size=N_USERS), rng.normal(size=N_USERS)
    quality, length, hype = (rng.normal(size=N_ITEMS) for _ in range(3))
    users = np.stack(
        [
            sigmoid(-2.2 + 0.6 * engaged + 0.2 * rng.normal(size=N_USERS)),
            np.exp(3.5 + 0.5 * long_reader + 0.15 * rng.normal(size=N_USERS)),
            rng.poisson(np.exp(3.0 + 0.6 * engaged)),
            rng.integers(1, 731, N_USERS),
        ],
        axis=1,
    )
    age = rng.integers(0, 366, N_ITEMS)
    items = np.stack(
        [
            sigmoid(-2.4 + 0.7 * quality + 0.2 * rng.normal(size=N_ITEMS)),
            np.exp(3.3 + 0.6 * length + 0.15 * rng.normal(size=N_ITEMS)),
            rng.poisson(np.exp(5.0 + 0.4 * quality + 0.9 * hype)),
            age,
        ],
        axis=1,
    )
    u = rng.integers(0, N_USERS, N_IMPRESSIONS)
    i = rng.integers(0, N_ITEMS, N_IMPRESSIONS)
    hour = rng.integers(0, 24, N_IMPRESSIONS)
    dow = rng.integers(0, 7, N_IMPRESSIONS)
    device = rng.choice(3, N_IMPRESSIONS, p=[0.6, 0.3, 0.1])
    evening = (hour >= 18) & (hour <= 22)
    logit = (
        -2.3
        + 0.7 * engaged[u]
        + 0.6 * quality[i]
        + 0.9 * long_reader[u] * length[i]
        - 0.7 * (device == 0) * length[i]
        - 0.004 * age[i]
        + 0.4 * evening * engaged[u]
        + 0.2 * (dow >= 5)
    )
    clicks = (rng.random(N_IMPRESSIONS) < sigmoid(logit)).astype(np.float32)
    return {
        "users": f32(users),
        "items": f32(items),
        "u": u,
        "i": i,
        "hour": hour,
        "dow": dow,
        "device": device,
        "clicks": clicks,
    }


def rows(data: dict[str, np.ndarray]) -> np.ndarray:
    """The model's input rows, assembled as the server does (modelgate.ranking.rows)."""
    one_hot = np.eye(len(DEVICES), dtype=np.float32)[data["device"]]
    context = np.stack([data["hour"], data["dow"]], axis=1).astype(np.float32)
    return np.concatenate(
        [data["users"][data["u"]], data["items"][data["i"]], context, one_hot], axis=1
    )


class Ranker(nn.Module):
    """Standardise (training mean/std, baked in), MLP, sigmoid: one score per row."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        n = len(mean)
        self.net = nn.Sequential(
            nn.Linear(n, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1)
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def train(model: Ranker, x: np.ndarray, y: np.ndarray) -> None:
    """Mini-batch Adam: ~1.5 s of one core for a better AUC than 250 full-batch epochs'
    ~8 s (this runs in every CI `make test`)."""
    xt, yt = torch.tensor(x), torch.tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=0.003)
    loss_fn = nn.BCEWithLogitsLoss()
    shuffle = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(xt), generator=shuffle)
        for at in range(0, len(xt), BATCH):
            batch = order[at : at + BATCH]
            opt.zero_grad()
            loss_fn(model.logits(xt[batch]), yt[batch]).backward()
            opt.step()
    model.eval()


def write_csv(path: Path, entity: str, columns: list[str], values: np.ndarray) -> None:
    ids = np.arange(len(values))
    table = np.concatenate([ids[:, None].astype(np.float64), values.astype(np.float64)], axis=1)
    header = ",".join([f"{entity}_id", *columns])
    fmt = ["%d"] + ["%.9g"] * len(columns)  # %.9g: every float32 reads back exactly
    np.savetxt(path, table, fmt=fmt, delimiter=",", header=header, comments="")


def build_ranker(root: Path) -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    data = synthetic(rng)
    x, y = rows(data), data["clicks"]
    order = rng.permutation(len(x))
    cut = int(len(x) * 0.8)
    tr, te = order[:cut], order[cut:]
    mean, std = x[tr].mean(axis=0), x[tr].std(axis=0) + 1e-6
    torch.manual_seed(SEED)  # before the net exists: its init is seeded
    model = Ranker(mean, std)
    train(model, x[tr], y[tr])
    with torch.inference_mode():
        scores = model(torch.tensor(x[te])).numpy()
    auc = round(float(roc_auc_score(y[te], scores)), 4)
    popularity = x[te][:, len(USER) + 2]  # item popularity alone
    baseline = round(float(roc_auc_score(y[te], popularity)), 4)

    version_dir = root / NAME / VERSION
    if version_dir.exists():
        shutil.rmtree(version_dir)
    (version_dir / "features").mkdir(parents=True)
    user_cols, item_cols = [f["name"] for f in USER], [f["name"] for f in ITEM]
    write_csv(version_dir / "features" / "user.csv", "user", user_cols, data["users"])
    write_csv(version_dir / "features" / "item.csv", "item", item_cols, data["items"])
    # Cold start: an unknown user or item looks like the median one.
    user_default = np.median(data["users"], axis=0)
    item_default = np.median(data["items"], axis=0)
    ranking = {
        "feature_set": FEATURE_SET,
        "user": [{**f, "default": float(d)} for f, d in zip(USER, user_default, strict=True)],
        "item": [{**f, "default": float(d)} for f, d in zip(ITEM, item_default, strict=True)],
        "context": CONTEXT,
    }
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(
        model, (torch.zeros(8, x.shape[1]),), dynamic_shapes=({0: batch},)
    )
    # No sample inputs in the archive: torch stores them as a pickle (build_models.py).
    program.example_inputs = None  # type: ignore[assignment]
    torch.export.save(program, str(version_dir / "model.pt2"))
    sha = hashlib.sha256((version_dir / "model.pt2").read_bytes()).hexdigest()
    manifest = {
        "name": NAME,
        "version": VERSION,
        "task": "ranking",
        "format": "torch_export",
        "file": "model.pt2",
        "sha256": sha,
        "ranking": ranking,
        "description": "Feed ranking: P(click) of a (user, item, context), MLP 13-32-16-1.",
        "metadata": {
            "created_at": CREATED_AT,
            "features": {"user": "features/user.csv", "item": "features/item.csv"},
            "training": {
                "data": f"synthetic users, items and clicks, seed {SEED}",
                "users": N_USERS,
                "items": N_ITEMS,
                "train_rows": len(tr),
                "heldout_rows": len(te),
                "click_rate": round(float(y.mean()), 4),
                "epochs": EPOCHS,
                "batch_size": BATCH,
                "heldout_auc": auc,
                "baseline_popularity_auc": baseline,
            },
        },
    }
    (version_dir / "model.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    m = build_ranker(args.out)
    t = m["metadata"]["training"]
    print(  # noqa: T201
        f"{NAME} v{VERSION} (ranking): held-out AUC {t['heldout_auc']}, "
        f"popularity baseline {t['baseline_popularity_auc']}"
    )


if __name__ == "__main__":
    main()
