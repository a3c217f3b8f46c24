"""A small ranker manifest for unit tests to vary."""

from __future__ import annotations

from typing import Any


def ranking_section(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "feature_set": "feed_test",
        "user": [
            {"name": "ctr", "min": 0, "max": 1, "default": 0.1},
            {"name": "segment", "kind": "categorical", "values": ["a", "b", "c"], "default": "b"},
        ],
        "item": [
            {"name": "popularity", "min": 0, "default": 5},
            {
                "name": "genre",
                "kind": "categorical",
                "values": ["news", "sport"],
                "encoding": "index",
                "default": "news",
            },
        ],
        "context": [
            {"name": "hour_of_day", "min": 0, "max": 23},
            {"name": "device", "kind": "categorical", "values": ["mobile", "desktop"]},
            {"name": "boost", "min": 0, "max": 2, "default": 1},
        ],
    }
    base.update(overrides)
    return base


def ranker_manifest(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "feed",
        "version": "1",
        "task": "ranking",
        "format": "torch_export",
        "file": "model.pt2",
        "sha256": "ab" * 32,
        "ranking": ranking_section(),
    }
    base.update(overrides)
    return base
