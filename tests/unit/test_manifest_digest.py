"""A manifest-only edit (class names) is a new answer: the cache key names the manifest's
digest, and making the version default again reloads it (issue 18, item 8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from modelgate.inference.repository import ModelRepository
from modelgate.shared.cache import cache_key


def test_manifest_only_edit_changes_the_cache_key_and_reloads(model_copy: Path) -> None:
    repo = ModelRepository(root=model_copy)
    repo.load_all()
    before = repo.get("churn", "2")
    row = np.zeros(len(before.manifest.input_names), dtype=np.float32)
    old_key = cache_key("churn", "2", before.sha256, before.manifest.digest, row)

    path = model_copy / "churn" / "2" / "model.json"
    manifest = json.loads(path.read_text())
    manifest["outputs"]["classes"] = ["stays", "leaves"]
    path.write_text(json.dumps(manifest))

    after = repo.make_default("churn", "2")
    assert after is not before and after.manifest.outputs.classes == ["stays", "leaves"]
    assert after.sha256 == before.sha256  # same model file
    new_key = cache_key("churn", "2", after.sha256, after.manifest.digest, row)
    assert new_key != old_key
