"""`modelgate import`: a tutorial-style checkpoint becomes a served, verified version.

The checkpoint is built here the way the tutorials save one (Lab 4.1's `ChurnPredictor`:
`torch.save({"model_state_dict": ..., "input_dim": 10, ...})`), imported with the command
a user runs, and served by a real replica whose answers are compared with the eager
module run here. Checkpoints that only pickle could rebuild are refused without running.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.conftest import VENV_BIN, Server

pytestmark = pytest.mark.integration

# The tutorial's model, as a user's own package would hold it.
TUTORIAL_MODULE = '''
import torch
from torch import nn


class ChurnPredictor(nn.Module):
    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.network = nn.Sequential(
            nn.Linear(input_dim, 64), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(32, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class Marker:
    """Unpickling this writes a file: the proof that a checkpoint ran code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
'''

SPEC = {
    "task": "binary_classification",
    "classes": ["stays", "churns"],
    "description": "Lab 4.1 churn MLP",
    "inputs": [
        {"name": "age", "dtype": "int", "min": 18, "max": 100, "mean": 45, "std": 15},
        {"name": "income", "min": 0, "mean": 60000, "std": 25000},
        {"name": "credit_score", "dtype": "int", "min": 300, "max": 850, "mean": 575, "std": 150},
        {"name": "num_purchases", "dtype": "int", "min": 0, "mean": 20, "std": 5},
        {"name": "account_age_days", "dtype": "int", "min": 0, "mean": 1800, "std": 1000},
        {"name": "avg_transaction", "min": 0, "mean": 80, "std": 50},
        {"name": "num_returns", "dtype": "int", "min": 0, "mean": 2, "std": 1.4},
        {"name": "is_premium", "dtype": "bool"},
        {"name": "region", "dtype": "int", "min": 0, "max": 4},
        {"name": "category_preference", "dtype": "int", "min": 0, "max": 9},
    ],
    "metrics": {"heldout_accuracy": 0.81},
}
ROW = [35, 75000, 680, 24, 730, 85.5, 2, 0, 2, 3]


@pytest.fixture
def tutorial(tmp_path: Path) -> Path:
    """A user's project folder: the model's package and a trained-looking checkpoint."""
    project = tmp_path / "project"
    (project / "churnlab").mkdir(parents=True)
    (project / "churnlab" / "__init__.py").write_text("")
    (project / "churnlab" / "model.py").write_text(TUTORIAL_MODULE)
    (project / "spec.json").write_text(json.dumps(SPEC))
    return project


def load_tutorial_class(project: Path, name: str) -> Any:
    namespace: dict[str, Any] = {}
    code = (project / "churnlab" / "model.py").read_text()
    exec(compile(code, "churnlab/model.py", "exec"), namespace)  # noqa: S102 - our fixture
    return namespace[name]


def run_import(repo: Path, project: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(VENV_BIN / "modelgate"),
            "import",
            "churn",
            "--model-repository",
            str(repo),
            "--python-path",
            str(project),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


def import_checkpoint(
    repo: Path, project: Path, checkpoint: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """The README's command shape: the tutorial's class, a checkpoint, the spec file."""
    return run_import(
        repo,
        project,
        "--checkpoint",
        str(checkpoint),
        "--model-class",
        "churnlab.model:ChurnPredictor",
        "--spec",
        str(project / "spec.json"),
        *extra,
    )


def test_tutorial_checkpoint_is_imported_verified_and_served(
    tutorial: Path, tmp_path: Path, replica_factory: Callable[..., Server]
) -> None:
    torch.manual_seed(0)
    net = load_tutorial_class(tutorial, "ChurnPredictor")(input_dim=10).eval()
    checkpoint = tutorial / "churn_model.pth"
    torch.save({"model_state_dict": net.state_dict(), "input_dim": 10, "epoch": 30}, checkpoint)
    repo = tmp_path / "models"

    done = import_checkpoint(repo, tutorial, checkpoint, "--init-arg-from-checkpoint", "input_dim")
    assert done.returncode == 0, done.stderr
    assert "imported churn version 1" in done.stdout
    assert "largest |served - eager|" in done.stdout

    version = repo / "churn" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.json", "model.pt2"]
    manifest = json.loads((version / "model.json").read_text())
    assert manifest["format"] == "torch_export" and manifest["outputs"]["classes"][1] == "churns"
    assert manifest["metadata"]["training"] == {"heldout_accuracy": 0.81}
    assert manifest["metadata"]["imported_from"]["checkpoint"] == "churn_model.pth"
    assert "mean" not in manifest["inputs"][0]  # scaling lives in the graph, not the manifest

    # A second import is the next version; nothing half-written is left behind.
    again = import_checkpoint(repo, tutorial, checkpoint, "--init-args", '{"input_dim": 10}')
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (repo / "churn").iterdir()) == ["1", "2"]

    # Served by a real replica: the answer is the eager module on the scaled row.
    server = replica_factory(repo, workers=1)
    r = httpx.post(f"{server.url}/predict", json={"features": ROW}, timeout=10)
    assert r.status_code == 200, r.text
    mean = torch.tensor([i.get("mean", 0.0) for i in SPEC["inputs"]])  # type: ignore[union-attr]
    std = torch.tensor([i.get("std", 1.0) for i in SPEC["inputs"]])  # type: ignore[union-attr]
    with torch.inference_mode():
        expected = net((torch.tensor([ROW], dtype=torch.float32) - mean) / std).item()
    assert r.json()["probability"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert r.json()["model_version"] == "2"


def test_a_checkpoint_that_needs_pickle_is_refused_without_running(
    tutorial: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    net = load_tutorial_class(tutorial, "ChurnPredictor")(input_dim=10)
    evil = load_tutorial_class(tutorial, "Marker")(str(marker))
    checkpoint = tutorial / "whole.pth"
    torch.save({"model_state_dict": net.state_dict(), "extra": evil}, checkpoint)

    done = import_checkpoint(
        tmp_path / "models", tutorial, checkpoint, "--init-args", '{"input_dim": 10}'
    )
    assert done.returncode == 1
    assert "only pickle can rebuild" in done.stderr and "state_dict()" in done.stderr
    assert not marker.exists()
    assert not (tmp_path / "models" / "churn").exists() or not any(
        (tmp_path / "models" / "churn").iterdir()
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--init-args", '{"input_dim": 7}'], "the weights don't fit ChurnPredictor"),
        (
            [
                "--init-args",
                '{"input_dim": 10}',
                "--classes",
                "a,b,c",
                "--task",
                "multiclass_classification",
            ],
            "must return [n, 3]",
        ),
        (["--init-args", '{"input_dim": 10}', "--input", "x"], "fails on a [3, 1]"),
    ],
)
def test_mistakes_are_explained_and_leave_nothing(
    tutorial: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    net = load_tutorial_class(tutorial, "ChurnPredictor")(input_dim=10)
    checkpoint = tutorial / "churn_model.pth"
    torch.save({"model_state_dict": net.state_dict()}, checkpoint)
    spec = dict(SPEC)
    if "--input" in extra:
        del spec["inputs"]
    (tutorial / "spec.json").write_text(json.dumps(spec))
    done = import_checkpoint(tmp_path / "models", tutorial, checkpoint, *extra)
    assert done.returncode == 1 and message in done.stderr, done.stderr
    leftovers = list((tmp_path / "models").rglob("*")) if (tmp_path / "models").exists() else []
    assert [p for p in leftovers if p.is_file()] == []


def test_torchscript_file_is_imported(tutorial: Path, tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = load_tutorial_class(tutorial, "ChurnPredictor")(input_dim=10).eval()
    scripted = tutorial / "churn.ts"
    with warnings.catch_warnings():  # TorchScript is deprecated upstream, still in use
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(net, torch.zeros(2, 10)), str(scripted))
    done = run_import(
        tmp_path / "models",
        tutorial,
        "--torchscript",
        str(scripted),
        "--spec",
        str(tutorial / "spec.json"),
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "models" / "churn" / "1" / "model.json").read_text())
    assert manifest["metadata"]["imported_from"]["torchscript"] == "churn.ts"


def test_the_readme_import_command_is_the_one_tested() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = textwrap.dedent(readme.split("# import the Lab 4.1 checkpoint", 1)[1].split("```")[0])
    for flag in ("--checkpoint", "--model-class", "--init-arg-from-checkpoint input_dim", "--spec"):
        assert flag in block
