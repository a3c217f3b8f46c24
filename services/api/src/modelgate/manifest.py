"""The model manifest, ``models/<name>/<version>/model.json``: what a model expects and is.

The manifest is the single source of validation: input names, order, dtypes and bounds
come from here, as do class names and the batching limits of the model.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MANIFEST_FILE = "model.json"
# The documented model-name and version formats (README, "Model repository"); every name
# or version from outside is checked against them by ModelRepository before use.
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
VERSION = re.compile(r"0|[1-9][0-9]{0,8}")  # ASCII digits, no leading zero: one spelling


class Task(StrEnum):
    BINARY = "binary_classification"
    MULTICLASS = "multiclass_classification"
    REGRESSION = "regression"


class ModelFormat(StrEnum):
    TORCH_EXPORT = "torch_export"  # torch.export.save, .pt2 (preferred)
    TORCHSCRIPT = "torchscript"  # torch.jit.save


class DType(StrEnum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    dtype: DType = DType.FLOAT
    min: float | None = None
    max: float | None = None
    description: str = ""
    example: float | bool | None = None

    @model_validator(mode="after")
    def _bounds_ordered(self) -> InputSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"input {self.name}: min {self.min} > max {self.max}")
        return self


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Classifiers: one name per class, in the order of the model's output columns.
    # Binary classifiers return P(class 1) and name two classes, negative first.
    classes: list[str] = Field(default_factory=list)


class BatchingOverride(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int | None = Field(None, ge=1, le=65536)
    max_batch_delay_ms: float | None = Field(None, ge=0, le=1000)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str = Field(pattern=r"^(?:0|[1-9][0-9]{0,8})$")
    task: Task
    format: ModelFormat
    file: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="model file in this directory")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: list[InputSpec] = Field(min_length=1)
    outputs: OutputSpec = Field(default_factory=OutputSpec)
    batching: BatchingOverride = Field(default_factory=BatchingOverride)
    description: str = ""
    # Free-form: training metrics, created_at, data set, owner ...
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if not MODEL_NAME.fullmatch(self.name):
            raise ValueError(f"model name {self.name!r} must match {MODEL_NAME.pattern}")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError("input names must be unique")
        n = len(self.outputs.classes)
        if self.task is Task.BINARY and n != 2:
            raise ValueError("a binary classifier names exactly two classes")
        if self.task is Task.MULTICLASS and n < 2:
            raise ValueError("a multiclass classifier names at least two classes")
        if self.task is Task.REGRESSION and n:
            raise ValueError("a regression model has no classes")
        return self

    @cached_property
    def digest(self) -> str:
        """sha256 of the manifest's content (canonical JSON): names the manifest in cache
        keys, so an edit of class names or bounds alone never meets an old answer."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    @cached_property
    def input_names(self) -> list[str]:
        """In input order; worked out once (read per request and per log line): don't
        modify it."""
        return [i.name for i in self.inputs]

    @cached_property
    def int_columns(self) -> tuple[int, ...]:
        """Positions of the integer inputs (worked out once: read per request)."""
        return tuple(i for i, spec in enumerate(self.inputs) if spec.dtype is DType.INT)

    @cached_property
    def bool_columns(self) -> tuple[int, ...]:
        """Positions of the boolean inputs (worked out once: read per request)."""
        return tuple(i for i, spec in enumerate(self.inputs) if spec.dtype is DType.BOOL)

    def example_features(self) -> dict[str, float | bool]:
        """One valid instance, for the docs: the manifest's examples, else a value in bounds."""
        out: dict[str, float | bool] = {}
        for spec in self.inputs:
            if spec.example is not None:
                out[spec.name] = spec.example
            elif spec.dtype is DType.BOOL:
                out[spec.name] = False
            else:
                lo = spec.min if spec.min is not None else 0.0
                value = lo if spec.max is None else (lo + spec.max) / 2
                out[spec.name] = int(value) if spec.dtype is DType.INT else value
        return out


def read_manifest(version_dir: Path) -> Manifest:
    """Parse and check one manifest; raises ValueError (pydantic's) or OSError."""
    raw = (version_dir / MANIFEST_FILE).read_bytes()
    manifest = Manifest.model_validate_json(raw)
    if manifest.version != version_dir.name:
        raise ValueError(f"manifest version {manifest.version!r} != directory {version_dir.name!r}")
    if manifest.name != version_dir.parent.name:
        raise ValueError(
            f"manifest name {manifest.name!r} != directory {version_dir.parent.name!r}"
        )
    return manifest
