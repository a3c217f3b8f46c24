"""``modelgate import``: a user's trained model → a verified repository version.

The tutorials save checkpoints with ``torch.save({"model_state_dict": ..., "input_dim": 10})``
and serve them by unpickling; modelgate never unpickles. This module rebuilds the model
from its class and a checkpoint read with ``torch.load(weights_only=True)`` (tensors and
plain containers only), bakes feature scaling and the output activation into one graph,
exports it with ``torch.export`` and writes ``models/<name>/<next version>/`` — the model
file and its manifest. The new version is then loaded through the same loader a replica
uses (sha256, archive rules, warm-up) and its outputs compared with the eager module's on
sample inputs; a version that fails either check is removed again.

The flow goes one way: ``ImportSpec`` (what the user says) → ``build_module`` (what torch
runs) → ``export_version`` (what lands on disk) → ``verify_version`` (what a replica would
serve, compared with the eager module).
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import os
import pickle
import shutil
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from modelgate.inference.manifest import (
    MANIFEST_FILE,
    MODEL_NAME,
    BatchingOverride,
    DType,
    InputSpec,
    Manifest,
    ModelFormat,
    OutputSpec,
    Reference,
    Task,
    read_manifest,
)
from modelgate.inference.repository import valid_name
from modelgate.inference.runtime import LoadedModel, load_model
from modelgate.observability.drift import reference_from_rows

# Where a checkpoint dict usually keeps its weights (the tutorials, Lightning, HF Trainer).
STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model")
MODEL_FILE = "model.pt2"


class ImportError_(Exception):
    """An import that can't go ahead; the message says why and what to do."""


class OutputKind(StrEnum):
    """What the user's module returns, so the exported graph returns what the task needs."""

    PROBABILITIES = "probabilities"  # already sigmoid/softmax (or a regression value)
    LOGITS = "logits"  # sigmoid (binary) or softmax (multiclass) is added to the graph


class ImportInput(InputSpec):
    """A manifest input, plus the training set's statistics to bake in (optional)."""

    mean: float | None = None
    std: float | None = Field(None, gt=0)


class ImportSpec(BaseModel):
    """The manifest's facts, from a YAML/JSON spec file and/or command-line flags."""

    model_config = ConfigDict(extra="forbid")

    task: Task
    inputs: list[ImportInput] = Field(min_length=1)
    classes: list[str] = Field(default_factory=list)
    output: OutputKind = OutputKind.PROBABILITIES
    description: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    batching: BatchingOverride = Field(default_factory=BatchingOverride)

    def manifest_inputs(self) -> list[InputSpec]:
        fields = set(InputSpec.model_fields)
        return [InputSpec(**i.model_dump(include=fields)) for i in self.inputs]

    def scaling(self) -> tuple[list[float], list[float]] | None:
        """(mean, std) per input when any input names one; the others pass through."""
        if all(i.mean is None and i.std is None for i in self.inputs):
            return None
        mean = [i.mean if i.mean is not None else 0.0 for i in self.inputs]
        std = [i.std if i.std is not None else 1.0 for i in self.inputs]
        return mean, std


# --- reading what the user gives us -----------------------------------------------------


def read_spec_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml  # a runtime dependency already (stack.py renders prometheus.yml)

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ImportError_(f"{path}: expected a mapping at the top level")
    return data


def parse_input_flag(text: str) -> dict[str, Any]:
    """``name[:dtype[:min:max]]``, e.g. ``age:int:18:100`` or ``income:float::``."""
    parts = text.split(":")
    if not parts[0] or len(parts) > 4:
        raise ImportError_(f"--input {text!r}: expected name[:dtype[:min:max]]")
    out: dict[str, Any] = {"name": parts[0]}
    if len(parts) > 1 and parts[1]:
        out["dtype"] = parts[1]
    for key, value in zip(("min", "max"), parts[2:], strict=False):
        if value:
            out[key] = float(value)
    return out


def build_spec(spec_file: dict[str, Any], overrides: Mapping[str, Any]) -> ImportSpec:
    merged = {**spec_file, **{k: v for k, v in overrides.items() if v not in (None, [], {})}}
    try:
        return ImportSpec.model_validate(merged)
    except ValidationError as exc:
        raise ImportError_(f"the model's description is incomplete or wrong:\n{exc}") from exc


def load_checkpoint(path: Path) -> Any:
    """Tensors and plain containers only. Anything else would need pickle to run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ImportError_(
            f"{path} holds Python objects that only pickle can rebuild, and loading it "
            "that way could run any code inside it, so modelgate won't. Save the weights "
            "instead: torch.save({'model_state_dict': model.state_dict(), ...}, path). "
            f"(torch said: {str(exc).splitlines()[0]})"
        ) from exc
    except (OSError, RuntimeError) as exc:
        raise ImportError_(f"cannot read checkpoint {path}: {exc}") from exc


def pick_state_dict(checkpoint: Any, key: str | None) -> dict[str, torch.Tensor]:
    """The weights: under ``key``, under a usual key, or the checkpoint itself."""
    if not isinstance(checkpoint, dict):
        raise ImportError_("the checkpoint is not a dict (a state_dict or one holding one)")
    if key is not None:
        if key not in checkpoint:
            raise ImportError_(f"no {key!r} in the checkpoint; keys: {sorted(checkpoint)}")
        candidate = checkpoint[key]
    elif all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        candidate = checkpoint
    else:
        found = [k for k in STATE_DICT_KEYS if isinstance(checkpoint.get(k), dict)]
        if not found:
            raise ImportError_(
                f"no state_dict found (looked for {', '.join(STATE_DICT_KEYS)}); "
                f"name it with --state-dict-key; keys: {sorted(checkpoint)}"
            )
        candidate = checkpoint[found[0]]
    if not isinstance(candidate, dict) or not all(
        isinstance(v, torch.Tensor) for v in candidate.values()
    ):
        raise ImportError_("the state_dict must map parameter names to tensors")
    return candidate


def resolve_class(dotted: str, python_path: Sequence[Path]) -> type[nn.Module]:
    """``package.module:ClassName`` → the class (the user's own code, imported as usual)."""
    module_name, _, class_name = dotted.partition(":")
    if not module_name or not class_name:
        raise ImportError_(f"--model-class {dotted!r}: expected package.module:ClassName")
    for p in reversed(python_path):
        sys.path.insert(0, str(p.resolve()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError_(f"cannot import {module_name}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ImportError_(f"{dotted} is not a torch.nn.Module class")
    return cls


def module_from_checkpoint(
    cls: type[nn.Module],
    checkpoint: Any,
    init_args: dict[str, Any],
    init_from_checkpoint: Sequence[str],
    state_dict_key: str | None,
) -> nn.Module:
    kwargs = dict(init_args)
    for key in init_from_checkpoint:
        if not isinstance(checkpoint, dict) or key not in checkpoint:
            raise ImportError_(f"--init-arg-from-checkpoint {key}: not in the checkpoint")
        value = checkpoint[key]
        kwargs[key] = value.tolist() if isinstance(value, torch.Tensor) else value
    try:
        module = cls(**kwargs)
    except TypeError as exc:
        raise ImportError_(f"{cls.__name__}(**{kwargs}) failed: {exc}") from exc
    try:
        module.load_state_dict(pick_state_dict(checkpoint, state_dict_key), strict=True)
    except RuntimeError as exc:  # missing/unexpected keys, shape mismatch
        raise ImportError_(f"the weights don't fit {cls.__name__}: {exc}") from exc
    return module.eval()


def load_torchscript(path: Path, n_inputs: int) -> nn.Module:
    """A TorchScript file, converted to an export-ready module.

    ``torch.jit.load`` runs TorchScript (not Python) and reads the archive's data with
    torch's C++ reader, not Python's pickle. torch.export can't capture a ScriptModule's
    parameters directly, so the graph goes through torch's own TorchScript → torch.export
    converter (private, ``torch._export.converter``; the migration path torch documents).
    """
    from torch._export.converter import TS2EPConverter

    try:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream; still in use
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        program = TS2EPConverter(scripted.eval(), (torch.zeros(4, n_inputs),)).convert()
    except Exception as exc:  # torch raises many types for files and graphs it can't take
        raise ImportError_(f"cannot convert TorchScript file {path}: {exc}") from exc
    module: nn.Module = program.module()
    return module


# --- the graph that is served -----------------------------------------------------------


class Serving(nn.Module):
    """Scaling, the user's network and the output activation: the serving contract in one
    graph, so serving can't drift from training."""

    def __init__(
        self,
        net: nn.Module,
        scaling: tuple[list[float], list[float]] | None,
        activation: str,
        flatten: bool,
    ) -> None:
        super().__init__()
        self.net = net
        self.scaled = scaling is not None
        mean, std = scaling if scaling is not None else ([0.0], [1.0])
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.activation = activation
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scaled:
            x = (x - self.mean) / self.std
        out: torch.Tensor = self.net(x)
        if self.activation == "sigmoid":
            out = torch.sigmoid(out)
        elif self.activation == "softmax":
            out = torch.softmax(out, dim=-1)
        if self.flatten:  # [n, 1] → [n]
            out = out.reshape(x.shape[0])
        return out


def serving_module(net: nn.Module, spec: ImportSpec) -> Serving:
    """Wrap ``net`` and check, on a probe batch, that it returns what the task needs."""
    activation = "none"
    if spec.output is OutputKind.LOGITS:
        if spec.task is Task.REGRESSION:
            raise ImportError_("--output logits makes no sense for a regression model")
        activation = "sigmoid" if spec.task is Task.BINARY else "softmax"
    probe = torch.zeros(3, len(spec.inputs))
    try:
        with torch.inference_mode():
            shape = tuple(net(probe).shape)
    except Exception as exc:  # the user's forward: any error means the inputs don't fit
        raise ImportError_(
            f"the model fails on a [3, {len(spec.inputs)}] float32 batch: {exc}"
        ) from exc
    if spec.task is Task.MULTICLASS:
        if shape != (3, len(spec.classes)):
            raise ImportError_(
                f"a multiclass model must return [n, {len(spec.classes)}] (one column per "
                f"class), this one returns {list(shape)} for n=3"
            )
        flatten = False
    elif shape in ((3,), (3, 1)):
        flatten = len(shape) == 2
    else:
        raise ImportError_(f"a {spec.task.value} model must return [n] or [n, 1], got {shape}")
    serving = Serving(net, spec.scaling(), activation, flatten)
    # Not .eval(): it recurses into ``net``, and a module converted from TorchScript
    # refuses train(False). ``net`` is in eval mode already; the wrapper has no dropout.
    serving.training = False
    return serving


# --- writing and checking the version ---------------------------------------------------


def next_version(model_dir: Path) -> str:
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return str(max(versions, default=0) + 1)


def export_program(module: nn.Module, n_inputs: int, path: Path) -> None:
    example = torch.zeros(8, n_inputs)
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch.export raises many types for graphs it can't capture
        raise ImportError_(f"torch.export could not capture the model: {exc}") from exc
    # No sample inputs in the archive: torch stores them as a pickle, which modelgate's
    # loader refuses (it never unpickles anything from a model directory).
    program.example_inputs = None
    torch.export.save(program, str(path))


@dataclass(frozen=True)
class ImportResult:
    version_dir: Path
    manifest: Manifest
    max_abs_diff: float
    samples: int


def sample_rows(spec: ImportSpec, n: int, seed: int = 0) -> np.ndarray:
    """Valid rows for the comparison: within bounds, whole ints, 0/1 bools."""
    rng = np.random.default_rng(seed)
    cols = []
    for i in spec.inputs:
        centre = i.mean if i.mean is not None else 0.0
        spread = i.std if i.std is not None else 1.0
        col = rng.normal(centre, spread, n)
        if i.min is not None or i.max is not None:
            lo = i.min if i.min is not None else (i.max or 0.0) - 4 * spread
            hi = i.max if i.max is not None else lo + 8 * spread
            col = rng.uniform(lo, hi, n)
        if i.dtype is DType.INT:
            col = np.round(col)
        elif i.dtype is DType.BOOL:
            col = rng.integers(0, 2, n).astype(np.float64)
        cols.append(col)
    return np.stack(cols, axis=1).astype(np.float32)


def import_model(
    repository: Path,
    name: str,
    net: nn.Module,
    spec: ImportSpec,
    source: Mapping[str, Any],
    tolerance: float = 1e-5,
    samples: int = 64,
    reference: Reference | None = None,
) -> ImportResult:
    """Export, write, verify through the replica's loader, compare; atomic on disk."""
    if not valid_name(name):  # the repository's one rule for names from outside
        raise ImportError_(f"model name {name!r} must match {MODEL_NAME.pattern}")
    module = serving_module(net, spec)
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    # Build in a hidden folder and rename: a replica scanning the repository never sees a
    # half-written version (version folders are digits only, so this one is ignored).
    staging = model_dir / f".import-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        export_program(module, len(spec.inputs), staging / MODEL_FILE)
        version = next_version(model_dir)
        manifest = Manifest(
            name=name,
            version=version,
            task=spec.task,
            format=ModelFormat.TORCH_EXPORT,
            file=MODEL_FILE,
            sha256=hashlib.sha256((staging / MODEL_FILE).read_bytes()).hexdigest(),
            inputs=spec.manifest_inputs(),
            outputs=OutputSpec(classes=spec.classes),
            batching=spec.batching,
            description=spec.description,
            metadata={
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "imported_from": dict(source),
                "training": spec.metrics,
            },
            reference=reference,
        )
        (staging / MANIFEST_FILE).write_text(
            json.dumps(manifest.model_dump(mode="json", exclude_defaults=False), indent=2) + "\n"
        )
        version_dir = model_dir / version
        staging.rename(version_dir)  # fails, rather than merging, if the version appeared
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        diff, n = verify_version(version_dir, module, spec, tolerance, samples)
    except Exception:
        shutil.rmtree(version_dir, ignore_errors=True)
        raise
    return ImportResult(version_dir, manifest, diff, n)


def verify_version(
    version_dir: Path, module: nn.Module, spec: ImportSpec, tolerance: float, samples: int
) -> tuple[float, int]:
    """Load the new version as a replica would and compare it with the eager module."""
    try:
        loaded: LoadedModel = load_model(version_dir, read_manifest(version_dir))
    except Exception as exc:
        raise ImportError_(f"the exported version does not load in modelgate: {exc}") from exc
    rows = sample_rows(spec, samples)
    served = loaded.run(rows)
    with torch.inference_mode():
        eager = module(torch.from_numpy(rows)).numpy().reshape(served.shape)
    diff = float(np.max(np.abs(served - eager)))
    if not np.isfinite(diff) or diff > tolerance:
        raise ImportError_(
            f"the exported model disagrees with the eager one: largest difference {diff:.3g} "
            f"over {samples} sample rows (tolerance {tolerance:g})"
        )
    return diff, samples


# --- the command ------------------------------------------------------------------------


def command(args: Any) -> int:
    try:
        result = _run(args)
    except ImportError_ as exc:
        sys.stderr.write(f"modelgate import: {exc}\n")
        return 1
    if args.register:
        from modelgate.inference.registry import MlflowRegistry, RegistryError

        if not args.mlflow_tracking_uri:
            sys.stderr.write("modelgate import: --register needs --mlflow-tracking-uri\n")
            return 2
        try:
            registered = MlflowRegistry(args.mlflow_tracking_uri).register(
                result.manifest.name, result.version_dir
            )
        except RegistryError as exc:
            sys.stderr.write(f"modelgate import: imported, but not registered: {exc}\n")
            return 1
        sys.stdout.write(f"registered as models:/{result.manifest.name}/{registered}\n")
    sys.stdout.write(
        f"imported {result.manifest.name} version {result.manifest.version} into "
        f"{result.version_dir}\n  sha256 {result.manifest.sha256}\n"
        f"  verified through modelgate's loader; largest |served - eager| over "
        f"{result.samples} sample rows: {result.max_abs_diff:.3g}\n"
    )
    return 0


def _run(args: Any) -> ImportResult:
    spec_file = read_spec_file(args.spec) if args.spec else {}
    try:
        metrics = {k: float(v) for k, _, v in (m.partition("=") for m in args.metric)}
        init_args = json.loads(args.init_args)
    except ValueError as exc:
        raise ImportError_(f"--metric NAME=VALUE / --init-args JSON: {exc}") from exc
    if not isinstance(init_args, dict):
        raise ImportError_("--init-args must be a JSON object")
    spec = build_spec(
        spec_file,
        {
            "task": args.task,
            "inputs": [parse_input_flag(i) for i in args.input],
            "classes": args.classes.split(",") if args.classes else None,
            "output": args.output,
            "description": args.description,
            "metrics": {**spec_file.get("metrics", {}), **metrics},
        },
    )
    if args.torchscript:
        net = load_torchscript(args.torchscript, len(spec.inputs))
        source = {"torchscript": args.torchscript.name, "sha256": _sha256(args.torchscript)}
    else:
        if not args.model_class:
            raise ImportError_("--checkpoint needs --model-class package.module:ClassName")
        checkpoint = load_checkpoint(args.checkpoint)
        net = module_from_checkpoint(
            resolve_class(args.model_class, args.python_path),
            checkpoint,
            init_args,
            args.init_arg_from_checkpoint,
            args.state_dict_key,
        )
        source = {
            "checkpoint": args.checkpoint.name,
            "sha256": _sha256(args.checkpoint),
            "model_class": args.model_class,
        }
    reference = read_reference(args.reference, spec) if args.reference else None
    return import_model(
        args.model_repository, args.name, net, spec, source, args.tolerance, reference=reference
    )


def read_reference(path: Path, spec: ImportSpec) -> Reference:
    """The drift reference (drift.py) from a CSV of training rows: a header naming inputs
    (any of them, in any order; other columns are refused), then one number per cell
    (true/false for a bool)."""
    names = [i.name for i in spec.inputs]
    try:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            unknown = [h for h in header if h not in names]
            if not header or unknown or len(set(header)) != len(header):
                raise ImportError_(
                    f"--reference {path}: the header must name inputs of the model, each "
                    f"once; {unknown or header} is not that (inputs: {names})"
                )
            rows = [
                [_reference_cell(cell, path, line) for cell in row]
                for line, row in enumerate(reader, 2)
            ]
    except OSError as exc:
        raise ImportError_(f"--reference {path}: {exc.strerror}") from None
    if not rows or any(len(r) != len(header) for r in rows):
        raise ImportError_(f"--reference {path}: needs rows of {len(header)} values each")
    matrix = np.asarray(rows, dtype=np.float32)
    return reference_from_rows(matrix, header, f"{path.name}, {len(rows)} rows")


def _reference_cell(cell: str, path: Path, line: int) -> float:
    text = cell.strip().lower()
    if text in ("true", "false"):
        return float(text == "true")
    try:
        value = float(text)
    except ValueError:
        raise ImportError_(f"--reference {path}, line {line}: {cell!r} is not a number") from None
    if not np.isfinite(value):
        raise ImportError_(f"--reference {path}, line {line}: {cell!r} is not finite")
    return value


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
