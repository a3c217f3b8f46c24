"""Model archive verification: decide what torch will read by torch's own rules.

Both formats are zip archives read by torch's C++ ``PyTorchFileReader`` (miniz), which
looks records up *case-insensitively* and, for duplicate names, returns whichever its
binary search meets first. A check that reads the archive with Python's ``zipfile`` and
compares names case-sensitively inspects different bytes than torch loads (issue 18: a
``data/sample_inputs/MODEL.PT`` entry passed the check and was unpickled by torch). So:

* names are checked as both readers see them: the same entries in both, no duplicate
  and no two names equal after ASCII case-folding, every name ASCII and on an allow-list
  of the format's exact layout (anything else — legacy weight files, AOTInductor shared
  libraries, opaque/custom objects, extra files — is refused, not skipped);
* contents are read through torch's reader, i.e. the bytes torch would load;
* a ``.pt2`` is then *rebuilt* from the checked records only (with empty sample inputs),
  and torch loads the rebuilt archive: nothing we did not inspect reaches torch.

Paths to unpickling or code in torch 2.13's ``torch.export.load`` (read in
torch/export/__init__.py, torch/export/pt2_archive/_package.py and
torch/_export/serde/serialize.py), and what closes each here:

* ``use_pickle`` weights/constants → ``torch.load(weights_only=False)``: refused;
* legacy ``data/weights/<m>.pt``/``data/constants/<m>.pt`` and the pre-2.8 zip layout
  (``serialized_state_dict.pt`` …) → ``torch.load``/``pickle``: not on the allow-list;
* ``custom_obj_*``/``opaque_obj_*`` constants → ``_pickle_load_obj``/``pickle.loads``:
  only ``tensor_<n>`` constants are allowed;
* sample inputs → ``torch.load(weights_only=True)`` falling back to ``weights_only=False``:
  must load under the restricted loader, and are dropped from the rebuilt archive anyway;
* ``data/aotinductor/`` → a shared library dlopen'ed: not on the allow-list;
* ``guards_code`` → ``exec`` when the module is built: must be empty;
* ``expr_str`` → ``sympy.sympify`` (``eval``): must match a small grammar with no
  attribute access, indexing or strings other than symbol names;
* node targets → resolved by ``getattr`` from ``torch``/``operator``/``math``: must be an
  ATen op (not ``aten.save``/``aten.from_file``, which touch files) or a symbolic-int op.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from typing import Any

import torch

from modelgate.errors import ModelLoadError

# The layout torch.export.save (2.13) writes for one program named "model".
_PT2_REQUIRED = frozenset(
    {
        "archive_format",
        "archive_version",
        "models/model.json",
        "data/weights/model_weights_config.json",
        "data/constants/model_constants_config.json",
        "data/sample_inputs/model.pt",
    }
)
_PT2_OPTIONAL = frozenset({".data/version", "byteorder", ".data/serialization_id"})
_PT2_WEIGHT = re.compile(r"data/weights/(weight_[0-9]{1,9})")
_PT2_CONSTANT = re.compile(r"data/constants/(tensor_[0-9]{1,9})")

# The layout torch.jit.save writes; code/ holds TorchScript source and its debug info.
_TS_NAME = re.compile(
    r"(?:data\.pkl|constants\.pkl|version|\.data/version|byteorder|\.data/serialization_id"
    r"|data/[0-9]{1,9}|constants/[0-9]{1,9}|traced_inputs\.pkl|traced_inputs/[0-9]{1,9}"
    r"|code/__torch__(?:/[A-Za-z0-9_]+)*\.py(?:\.debug_pkl)?)"
)
_ROOT = re.compile(r"[A-Za-z0-9_.-]{1,128}")

# Node targets: ATen overloads and the symbolic-int ops torch's deserializer accepts.
_TARGET = re.compile(
    r"torch\.ops\.aten\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+"
    r"|_operator\.(?:eq|ne|le|ge|lt|gt|neg|pos|mul|add|sub|floordiv|mod|pow|truediv|and_|or_"
    r"|lshift|rshift|getitem)|torch\.sym_(?:not|int|float|ite|max|min|sqrt)|math\.trunc"
)
_FILE_OPS = frozenset({"save", "from_file"})  # aten ops that read or write files

# expr_str is given to sympy.sympify, which evals it: allow only names, integers,
# arithmetic/comparison operators, parentheses, commas, keyword `=` and quoted symbol
# names — no `.`, `[`, `__`, or other strings, so no attribute can be reached.
_EXPR_TOKEN = re.compile(
    r"\s+|[0-9]+|'[a-z][a-z0-9_]{0,15}'|[A-Za-z_][A-Za-z0-9_]*|\*\*|//|==|!=|<=|>=|[-+*/%(),=<>]"
)
_EXPR_NAMES = frozenset(
    {
        "Symbol", "Integer", "Rational", "True", "False", "positive", "integer", "real",
        "nonnegative", "finite", "Max", "Min", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And",
        "Or", "Not", "Abs", "floor", "ceiling", "sqrt", "oo",
        # torch.utils._sympy.functions, as torch's deserializer names them
        "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
        "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow",
        "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat",
        "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "OpaqueUnaryFn_sqrt",
        "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "BitwiseFn_bitwise_xor",
        "Identity",
    }
)  # fmt: skip
_SYMBOL_NAME = re.compile(r"[a-z][0-9]{1,9}")
_MAX_EXPR = 1000


class _Records:
    """The archive's records as torch's reader finds them, after the name checks."""

    def __init__(self, data: bytes) -> None:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
        if not names:
            raise ModelLoadError("empty archive")
        folded: dict[str, str] = {}
        for name in names:
            if not name.isascii():
                raise ModelLoadError(f"entry name {name!r} is not ASCII")
            other = folded.setdefault(name.lower(), name)
            if other is not name:
                raise ModelLoadError(
                    f"entries {other!r} and {name!r} collide: torch finds records "
                    "case-insensitively, so either could be the one it reads"
                )
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1 or any("/" not in n for n in names):
            raise ModelLoadError("archive must have exactly one top-level folder")
        root = roots.pop()
        if not _ROOT.fullmatch(root):
            raise ModelLoadError(f"archive folder {root!r} has unexpected characters")
        self.names = [n[len(root) + 1 :] for n in names]
        try:
            self._reader = torch._C.PyTorchFileReader(io.BytesIO(data))
            seen = sorted(self._reader.get_all_records())
        except RuntimeError as exc:
            raise ModelLoadError(f"torch cannot read the archive: {_first_line(exc)}") from exc
        # TorchScript's reader hides *.debug_pkl records unless asked for debug symbols.
        expected = sorted(n for n in self.names if not n.endswith(".debug_pkl"))
        if seen != expected and seen != sorted(self.names):
            raise ModelLoadError("torch and zipfile see different entries in the archive")

    def read(self, name: str) -> bytes:
        try:
            return bytes(self._reader.get_record(name))
        except RuntimeError as exc:
            raise ModelLoadError(f"cannot read entry {name}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def check_torchscript(data: bytes) -> None:
    """Refuse a TorchScript archive whose entries are not exactly torch.jit.save's layout."""
    records = _Records(data)
    if not any(n.startswith("code/") for n in records.names) or (
        "constants.pkl" not in records.names
    ):
        raise ModelLoadError("not a TorchScript archive (no code/ or constants.pkl)")
    for name in records.names:
        if not _TS_NAME.fullmatch(name):
            raise ModelLoadError(f"unexpected entry {name!r} in a TorchScript archive")


def verified_pt2(data: bytes) -> bytes:
    """A ``.pt2`` rebuilt from its checked records only; ModelLoadError if any record
    could lead torch to unpickle or run code."""
    records = _Records(data)
    if "models/model.json" not in records.names:
        raise ModelLoadError("not a torch.export archive (no models/model.json)")
    weights: set[str] = set()
    constants: set[str] = set()
    for name in records.names:
        if m := _PT2_WEIGHT.fullmatch(name):
            weights.add(m.group(1))
        elif m := _PT2_CONSTANT.fullmatch(name):
            constants.add(m.group(1))
        elif name not in _PT2_REQUIRED and name not in _PT2_OPTIONAL:
            raise ModelLoadError(f"unexpected entry {name!r} in a torch.export archive")
    missing = _PT2_REQUIRED - set(records.names)
    if missing:
        raise ModelLoadError(f"torch.export archive lacks {', '.join(sorted(missing))}")
    from torch.export.pt2_archive.constants import ARCHIVE_FORMAT_VALUE, ARCHIVE_VERSION_VALUE

    if records.read("archive_format").decode("ascii", "replace") != ARCHIVE_FORMAT_VALUE:
        raise ModelLoadError("not a torch.export archive (archive_format)")
    if records.read("archive_version").decode("ascii", "replace") != ARCHIVE_VERSION_VALUE:
        raise ModelLoadError("unsupported torch.export archive version")
    out: dict[str, bytes] = {
        "archive_format": ARCHIVE_FORMAT_VALUE.encode(),
        "archive_version": ARCHIVE_VERSION_VALUE.encode(),
        # Sample inputs are only examples; torch would unpickle them (and fall back to
        # weights_only=False), so they are checked and then left out of what it reads.
        "data/sample_inputs/model.pt": b"",
    }
    for config_name, kind, present in (
        ("data/weights/model_weights_config.json", "weight", weights),
        ("data/constants/model_constants_config.json", "tensor", constants),
    ):
        blob = records.read(config_name)
        for path in _payload_paths(blob, kind, present):
            entry = f"{config_name.rsplit('/', 1)[0]}/{path}"
            out[entry] = records.read(entry)
        out[config_name] = blob
    program = records.read("models/model.json")
    _check_program(program)
    out["models/model.json"] = program
    _check_sample_inputs(records.read("data/sample_inputs/model.pt"))
    return _rebuild(out)


def _payload_paths(blob: bytes, kind: str, present: set[str]) -> set[str]:
    """The payload files a weights/constants config names, each a raw tensor file."""
    try:
        config = json.loads(blob)
    except ValueError as exc:
        raise ModelLoadError(f"bad {kind} config: {exc}") from exc
    payloads = config.get("config") if isinstance(config, dict) else None
    if not isinstance(payloads, dict):
        raise ModelLoadError(f"bad {kind} config: no 'config' object")
    paths: set[str] = set()
    for fqn, payload in payloads.items():
        if not isinstance(payload, dict):
            raise ModelLoadError(f"bad {kind} config entry {fqn!r}")
        if payload.get("use_pickle") is not False:
            raise ModelLoadError(f"pickled tensor {fqn!r} refused")
        path = payload.get("path_name")
        if not isinstance(path, str) or not re.fullmatch(kind + r"_[0-9]{1,9}", path):
            raise ModelLoadError(f"non-tensor payload {fqn!r} ({path!r}) refused")
        if path not in present:
            raise ModelLoadError(f"{kind} config names missing file {path!r}")
        paths.add(path)
    if present - paths:
        raise ModelLoadError(f"unreferenced {kind} files {sorted(present - paths)}")
    return paths


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object nested in ``node`` (iteratively: a deep document can't recurse)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_program(blob: bytes) -> None:
    try:
        program = json.loads(blob)
    except ValueError as exc:
        raise ModelLoadError(f"bad models/model.json: {exc}") from exc
    if not isinstance(program, dict):
        raise ModelLoadError("bad models/model.json: not an object")
    if program.get("guards_code"):
        raise ModelLoadError("guards_code refused (torch would exec it)")
    for obj in _objects(program):
        if "expr_str" in obj:
            check_sym_expr(obj["expr_str"])
        if "target" in obj and "inputs" in obj and "outputs" in obj:  # a graph node
            check_target(obj["target"])


def check_target(target: object) -> None:
    """An operator a graph node may call."""
    if not isinstance(target, str) or not _TARGET.fullmatch(target):
        raise ModelLoadError(f"graph operator {str(target)[:80]!r} refused")
    parts = target.split(".")
    if parts[:3] == ["torch", "ops", "aten"] and parts[3] in _FILE_OPS:
        raise ModelLoadError(f"graph operator {target!r} refused (it touches files)")


def check_sym_expr(expr: object) -> None:
    """A symbolic shape expression sympy may evaluate."""
    if not isinstance(expr, str) or len(expr) > _MAX_EXPR:
        raise ModelLoadError("symbolic expression refused (not a short string)")
    pos = 0
    while pos < len(expr):
        m = _EXPR_TOKEN.match(expr, pos)
        if m is None:
            raise ModelLoadError(f"symbolic expression {expr[:80]!r} refused at {pos}")
        token = m.group()
        if (token[0].isalpha() or token[0] == "_") and not (
            token in _EXPR_NAMES or _SYMBOL_NAME.fullmatch(token)
        ):
            raise ModelLoadError(f"symbolic expression {expr[:80]!r}: name {token!r} refused")
        pos = m.end()


def _check_sample_inputs(blob: bytes) -> None:
    if not blob:
        return
    try:
        torch.load(io.BytesIO(blob), weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            "sample inputs data/sample_inputs/model.pt need more than torch's weights_only loader"
        ) from exc


def _rebuild(records: dict[str, bytes]) -> bytes:
    """A fresh archive holding exactly ``records``, written by torch's own writer."""
    buf = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(buf)
    for name in sorted(records):
        writer.write_record(name, records[name], len(records[name]))
    writer.write_end_of_file()
    return buf.getvalue()
