"""A valid manifest for unit tests to vary."""

from __future__ import annotations

from typing import Any


def manifest_dict(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "churn",
        "version": "3",
        "task": "binary_classification",
        "format": "torch_export",
        "file": "model.pt2",
        "sha256": "ab" * 32,
        "inputs": [
            {"name": "age", "dtype": "int", "min": 18, "max": 100},
            {"name": "income", "dtype": "float", "min": 0},
            {"name": "is_premium", "dtype": "bool"},
        ],
        "outputs": {"classes": ["stays", "churns"]},
        "metadata": {"created_at": "2026-01-01T00:00:00Z", "training": {"accuracy": 0.9}},
    }
    base.update(overrides)
    return base
