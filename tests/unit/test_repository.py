"""Model repository: verification before loading, default versions, and refusing bad files
while keeping what was loaded."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from modelgate.errors import ModelLoadError, ModelNotFound
from modelgate.inference.repository import ModelRepository


class _Payload:
    """Unpickling this would create a file: proof that nothing is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def add_version(repo: Path, src_version: str, new_version: str, data: bytes | None = None) -> Path:
    """Copy churn/<src> to churn/<new>, optionally replacing the model file's bytes; the
    manifest's sha256 is made to match the new bytes (an attacker who can write the
    directory can do the same)."""
    src = repo / "churn" / src_version
    dst = repo / "churn" / new_version
    dst.mkdir()
    manifest = json.loads((src / "model.json").read_text())
    body = data if data is not None else (src / manifest["file"]).read_bytes()
    (dst / manifest["file"]).write_bytes(body)
    manifest.update(version=new_version, sha256=hashlib.sha256(body).hexdigest())
    (dst / "model.json").write_text(json.dumps(manifest))
    return dst


def loaded(repo: Path, **kwargs: object) -> ModelRepository:
    r = ModelRepository(root=repo, **kwargs)  # type: ignore[arg-type]
    r.load_all()
    return r


def test_demo_repository_loads_with_highest_version_as_default(demo_models: Path) -> None:
    r = loaded(demo_models)
    assert sorted(r.models) == ["churn", "feed", "iris"]
    assert r.models["churn"].default_version == "2"
    assert sorted(r.models["churn"].versions) == ["1", "2"]
    assert r.ready() and not r.failures
    assert r.get().name == "churn"  # first model by name is the default model
    assert r.get("churn", "1").manifest.format.value == "torchscript"


def test_a_ranker_is_never_the_default_predictor(demo_models: Path, tmp_path: Path) -> None:
    """``feed`` sorts before ``iris``, but /predict must run a model that predicts."""
    for name in ("feed", "iris"):
        shutil.copytree(demo_models / name, tmp_path / name)
    assert loaded(tmp_path).get().name == "iris"
    assert loaded(tmp_path, default_model_name="feed").get().name == "feed"  # if asked


def test_pinned_version_wins_over_highest(demo_models: Path) -> None:
    r = loaded(demo_models, pinned={"churn": "1"}, default_model_name="iris")
    assert r.get("churn").version == "1"
    assert r.get().name == "iris"


def test_unknown_model_and_version_are_not_found(demo_models: Path) -> None:
    r = loaded(demo_models)
    with pytest.raises(ModelNotFound):
        r.get("nope")
    with pytest.raises(ModelNotFound):
        r.get("churn", "9")


def refused(repo: Path) -> str:
    r = loaded(repo)
    assert r.models["churn"].default_version == "2", "a refused v3 must not become default"
    assert r.ready()
    [failure] = r.failures
    assert (failure.name, failure.version) == ("churn", "3")
    return failure.reason


def test_sha256_mismatch_is_refused(model_copy: Path) -> None:
    v3 = add_version(model_copy, "2", "3")
    manifest = json.loads((v3 / "model.json").read_text())
    manifest["sha256"] = "0" * 64
    (v3 / "model.json").write_text(json.dumps(manifest))
    assert "sha256 mismatch" in refused(model_copy)


def test_truncated_file_is_refused(model_copy: Path) -> None:
    v3 = add_version(model_copy, "2", "3")
    manifest = json.loads((v3 / "model.json").read_text())
    (v3 / "model.pt2").write_bytes((v3 / "model.pt2").read_bytes()[:500])
    (v3 / "model.json").write_text(json.dumps(manifest))  # sha of the full file
    assert "truncated or replaced" in refused(model_copy)


def test_truncated_file_with_matching_sha_is_refused(model_copy: Path) -> None:
    full = (model_copy / "churn" / "2" / "model.pt2").read_bytes()
    add_version(model_copy, "2", "3", full[: len(full) // 2])
    assert "zip" in refused(model_copy)


def test_raw_pickle_is_refused_and_never_unpickled(model_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    add_version(model_copy, "2", "3", pickle.dumps(_Payload(marker)))
    assert "raw pickle" in refused(model_copy)
    assert not marker.exists()


def test_torch_save_pickle_is_refused_for_both_formats(model_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"state": _Payload(marker)}, buf)
    add_version(model_copy, "2", "3", buf.getvalue())
    assert "not a torch.export archive" in refused(model_copy)
    assert not marker.exists()

    add_version(model_copy, "1", "4", buf.getvalue())  # v1's manifest says torchscript
    r = loaded(model_copy)
    assert any("not a TorchScript archive" in f.reason for f in r.failures if f.version == "4")
    assert not marker.exists()


def test_pt2_with_pickled_weights_is_refused(model_copy: Path) -> None:
    src = (model_copy / "churn" / "2" / "model.pt2").read_bytes()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(src)) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("data/weights/model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"].values()))
                first["use_pickle"] = True
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    add_version(model_copy, "2", "3", out.getvalue())
    assert "pickled tensor" in refused(model_copy)


def test_failed_reload_keeps_what_was_loaded(model_copy: Path) -> None:
    r = loaded(model_copy)
    before = r.get("churn")
    add_version(model_copy, "2", "3", b"not a model")
    with pytest.raises(ModelLoadError):
        r.load_version("churn", "3")
    assert r.get("churn") is before
    with pytest.raises(ModelLoadError, match="no version '7'"):
        r.load_version("churn", "7")


def test_reload_swaps_default_and_unload_falls_back(model_copy: Path) -> None:
    r = loaded(model_copy)
    add_version(model_copy, "2", "3")
    old = r.get("churn")
    new = r.load_version("churn", "3")
    assert r.get("churn") is new and new is not old
    r.unload_version("churn", "3")
    assert r.get("churn").version == "2"
    r.unload_version("churn")
    assert "churn" not in r.models and r.ready()  # iris is all that is configured now


def test_loaded_model_matches_the_exported_program(demo_models: Path) -> None:
    model = loaded(demo_models).get("churn", "2")
    program = torch.export.load(str(demo_models / "churn" / "2" / "model.pt2")).module()
    x = np.random.default_rng(0).uniform(0, 1, (5, 10)).astype(np.float32) * 100 + 18
    with torch.inference_mode():
        expected = program(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.run(x), expected, rtol=1e-6)


@pytest.mark.parametrize(("name", "version"), [("churn", "2"), ("iris", "1")])
def test_exported_graphs_run_traced_with_identical_answers(
    demo_models: Path, name: str, version: str
) -> None:
    repo = ModelRepository(root=demo_models)
    repo.load_all()
    model = repo.get(name, version)
    assert isinstance(model.module, torch.jit.ScriptModule)  # the fast path was taken
    program = torch.export.load(str(demo_models / name / version / model.manifest.file))
    exported = program.module()
    rng = np.random.default_rng(1)
    example = model.manifest.example_features()
    row = np.array([[float(example[n]) for n in model.manifest.input_names]], dtype=np.float32)
    for n in (1, 5, 300):
        batch = (row * rng.uniform(0.5, 1.5, size=(n, row.shape[1]))).astype(np.float32)
        with torch.no_grad():
            want = exported(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(
            model.run(batch), want.reshape(model.run(batch).shape), rtol=1e-6
        )


def test_failures_kept_are_bounded(model_copy: Path) -> None:
    repo = ModelRepository(root=model_copy)
    for i in range(250):
        repo.record_failure("churn", str(i), "refused")
    assert len(repo.failures) == 100 and repo.failures[-1].version == "249"
