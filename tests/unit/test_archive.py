"""Archive verification can't be walked around: each evasion of the ``.pt2``/TorchScript
checks is built with a payload that would create a marker file, and must be refused at
load with the marker never created (issue 18, item 1)."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from modelgate.errors import ModelLoadError
from modelgate.inference.archive import check_sym_expr, check_target
from modelgate.inference.repository import ModelRepository

Entries = list[tuple[str, bytes]]


class _Payload:
    """Unpickling this creates ``marker``: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def pickled(marker: Path) -> bytes:
    """What torch.save writes for sample inputs, with a payload weights_only refuses."""
    buf = io.BytesIO()
    torch.save(((_Payload(marker),), {}), buf)
    return buf.getvalue()


def entries(path: Path) -> Entries:
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def rezip(items: Entries) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicates we write on purpose
        with zipfile.ZipFile(out, "w") as z:
            for name, data in items:
                z.writestr(name, data)
    return out.getvalue()


def install(repo: Path, src: str, data: bytes) -> None:
    """churn/3: churn/<src>'s manifest with ``data`` as the model file, sha256 matching."""
    manifest = json.loads((repo / "churn" / src / "model.json").read_text())
    dst = repo / "churn" / "3"
    dst.mkdir()
    (dst / manifest["file"]).write_bytes(data)
    manifest.update(version="3", sha256=hashlib.sha256(data).hexdigest())
    (dst / "model.json").write_text(json.dumps(manifest))


def refusal(repo: Path) -> str:
    """Boot-time load of the repository: v3 is refused, v2 still serves."""
    r = ModelRepository(root=repo)
    r.load_all()
    assert r.models["churn"].default_version == "2"
    [failure] = r.failures
    assert failure.version == "3"
    return failure.reason


def edit(src: Path, change: Callable[[str, bytes], list[tuple[str, bytes]]]) -> bytes:
    return rezip([out for name, data in entries(src) for out in change(name, data)])


def with_program(src: Path, change: Callable[[dict[str, object]], None]) -> bytes:
    def apply(name: str, data: bytes) -> list[tuple[str, bytes]]:
        if name.endswith("models/model.json"):
            program = json.loads(data)
            change(program)
            data = json.dumps(program).encode()
        return [(name, data)]

    return edit(src, apply)


@pytest.fixture
def pt2(model_copy: Path) -> Path:
    return model_copy / "churn" / "2" / "model.pt2"


def test_sample_inputs_under_a_case_variant_name_are_refused(
    model_copy: Path, pt2: Path, tmp_path: Path
) -> None:
    # torch finds data/sample_inputs/model.pt case-insensitively, so it would read this
    # entry, fail weights_only and fall back to weights_only=False.
    marker = tmp_path / "pwned"
    install(
        model_copy,
        "2",
        edit(
            pt2,
            lambda n, d: (
                [(n.replace("sample_inputs", "SAMPLE_INPUTS"), pickled(marker))]
                if n.endswith("data/sample_inputs/model.pt")
                else [(n, d)]
            ),
        ),
    )
    assert "SAMPLE_INPUTS" in refusal(model_copy)
    assert not marker.exists()


def test_case_colliding_entries_are_refused(model_copy: Path, pt2: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    def both(n: str, d: bytes) -> list[tuple[str, bytes]]:
        if n.endswith("data/sample_inputs/model.pt"):
            return [(n.replace("model.pt", "Model.pt"), pickled(marker)), (n, d)]
        return [(n, d)]

    install(model_copy, "2", edit(pt2, both))
    assert "collide" in refusal(model_copy)
    assert not marker.exists()


def test_duplicate_entries_are_refused(model_copy: Path, pt2: Path, tmp_path: Path) -> None:
    # zipfile reads the last of two equal names; torch's binary search may meet either.
    marker = tmp_path / "pwned"

    def twice(n: str, d: bytes) -> list[tuple[str, bytes]]:
        if n.endswith("data/sample_inputs/model.pt"):
            return [(n, pickled(marker)), (n, d)]
        return [(n, d)]

    install(model_copy, "2", edit(pt2, twice))
    assert "collide" in refusal(model_copy)
    assert not marker.exists()


def test_guards_code_is_refused(model_copy: Path, pt2: Path, tmp_path: Path) -> None:
    # torch exec()s guards_code when ExportedProgram.module() builds the module.
    marker = tmp_path / "pwned"
    guard = f"__import__('pathlib').Path({str(marker)!r}).touch() is None"
    install(model_copy, "2", with_program(pt2, lambda p: p.update(guards_code=[guard])))
    assert "guards_code" in refusal(model_copy)
    assert not marker.exists()


def test_symbolic_expression_that_sympy_would_eval_is_refused(
    model_copy: Path, pt2: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = f"__import__('pathlib').Path({str(marker)!r}).touch() or "

    def poison(program: dict[str, object]) -> None:
        text = json.dumps(program).replace('"Symbol(', json.dumps(evil)[:-1] + "Symbol(")
        program.clear()
        program.update(json.loads(text))

    data = with_program(pt2, poison)
    assert b"__import__" in data
    install(model_copy, "2", data)
    assert "symbolic expression" in refusal(model_copy)
    assert not marker.exists()


def test_opaque_constant_is_refused(model_copy: Path, pt2: Path, tmp_path: Path) -> None:
    # constants named opaque_obj_* are pickle.loads()ed, custom_obj_* by torchbind's loader.
    import pickle

    marker = tmp_path / "pwned"

    def opaque(n: str, d: bytes) -> list[tuple[str, bytes]]:
        if n.endswith("data/constants/model_constants_config.json"):
            config = {"config": {"c": {"path_name": "opaque_obj_0", "use_pickle": False}}}
            root = n.split("/", 1)[0]
            return [
                (n, json.dumps(config).encode()),
                (f"{root}/data/constants/opaque_obj_0", pickle.dumps(_Payload(marker))),
            ]
        return [(n, d)]

    install(model_copy, "2", edit(pt2, opaque))
    assert "opaque_obj_0" in refusal(model_copy)
    assert not marker.exists()


@pytest.mark.parametrize(
    "extra",
    [
        "data/weights/model.pt",  # legacy pickled weights
        "data/aotinductor/model/model.so",  # a shared library torch would dlopen
        "extra/notes.txt",
        "data/sample_inputs/other.pt",
        "models/other.json",
    ],
)
def test_entries_off_the_layout_are_refused(model_copy: Path, pt2: Path, extra: str) -> None:
    root = entries(pt2)[0][0].split("/", 1)[0]
    install(model_copy, "2", rezip([*entries(pt2), (f"{root}/{extra}", b"\x80\x04N.")]))
    assert "unexpected entry" in refusal(model_copy)


def test_torchscript_case_collision_and_stray_entries_are_refused(model_copy: Path) -> None:
    ts = model_copy / "churn" / "1" / "model.ts"
    items = entries(ts)
    root = items[0][0].split("/", 1)[0]
    install(model_copy, "1", rezip([*items, (f"{root}/CONSTANTS.pkl", b"\x80\x04N.")]))
    assert "collide" in refusal(model_copy)


def test_a_verified_pt2_still_loads_and_answers_like_the_original(demo_models: Path) -> None:
    r = ModelRepository(root=demo_models)
    r.load_all()
    program = torch.export.load(str(demo_models / "churn" / "2" / "model.pt2")).module()
    x = torch.randn(5, len(r.get("churn", "2").manifest.input_names))
    with torch.no_grad():
        expected = program(x).numpy().reshape(5)
    got = r.get("churn", "2").run(x.numpy())
    assert torch.allclose(torch.from_numpy(got), torch.from_numpy(expected), atol=1e-6)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os')",
        "Symbol('s0').__class__",
        "Symbol('s0')[0]",
        'Symbol("s0")',
        "lambda: 1",
        "s0 + open",
    ],
)
def test_symbolic_expression_grammar_refuses(expr: str) -> None:
    with pytest.raises(ModelLoadError):
        check_sym_expr(expr)


def test_symbolic_expression_grammar_accepts_what_export_writes() -> None:
    for expr in ("Symbol('s31', positive=True, integer=True)", "Max(2, s0) + FloorDiv(s1, 2)"):
        check_sym_expr(expr)


@pytest.mark.parametrize(
    "target",
    ["torch.ops.aten.save.default", "torch.ops.aten.from_file.default", "torch.os.system",
     "builtins.eval", "_operator.call", 7],
)  # fmt: skip
def test_graph_operators_outside_aten_are_refused(target: object) -> None:
    with pytest.raises(ModelLoadError):
        check_target(target)
