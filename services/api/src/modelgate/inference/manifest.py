"""The model manifest, ``models/<name>/<version>/model.json``: what a model expects and is.

The manifest is the single source of validation: input names, order, dtypes and bounds
come from here, as do class names and the batching limits of the model.
"""

from __future__ import annotations

import hashlib
import math
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
    # One score per (user, item) row, features from the online store (``ranking``).
    RANKING = "ranking"


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


class FeatureKind(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


class Encoding(StrEnum):
    ONE_HOT = "one_hot"  # one 0/1 column per allowed value, in the listed order
    INDEX = "index"  # one column: the value's position in ``values``


FEATURE_NAME = r"^[a-z][a-z0-9_]{0,39}$"


class FeatureSpec(BaseModel):
    """One user, item or context feature of a ranker.

    Entity (user, item) features are read from the online store as float32 values; a
    categorical one is stored as its value's index in ``values``. ``default`` stands in
    for an id the store does not know (cold start) and, for context, for a key the
    request leaves out (no default: the key is required).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=FEATURE_NAME)
    kind: FeatureKind = FeatureKind.NUMERIC
    min: float | None = None
    max: float | None = None
    values: list[str] = Field(default_factory=list, max_length=256)
    encoding: Encoding = Encoding.ONE_HOT
    default: float | str | None = None
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.kind is FeatureKind.CATEGORICAL:
            if len(self.values) < 2 or len(set(self.values)) != len(self.values):
                raise ValueError(f"feature {self.name}: needs at least two distinct values")
            if self.min is not None or self.max is not None:
                raise ValueError(f"feature {self.name}: a categorical feature has no bounds")
            if self.default is not None and self.default not in self.values:
                raise ValueError(f"feature {self.name}: default must be one of its values")
            return self
        if self.values:
            raise ValueError(f"feature {self.name}: only a categorical feature has values")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name}: min {self.min} > max {self.max}")
        if self.default is not None:
            if isinstance(self.default, str):
                raise ValueError(f"feature {self.name}: a numeric default is a number")
            if not self.contains(self.default):
                raise ValueError(f"feature {self.name}: default outside [min, max]")
        return self

    def contains(self, value: float) -> bool:
        """Within the bounds (numeric features)."""
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    @property
    def width(self) -> int:
        """Columns this feature takes in the model's input row."""
        one_hot = self.kind is FeatureKind.CATEGORICAL and self.encoding is Encoding.ONE_HOT
        return len(self.values) if one_hot else 1

    def default_code(self) -> float:
        """The default as stored and assembled: the number, or the value's index."""
        if isinstance(self.default, str):
            return float(self.values.index(self.default))
        return float(self.default) if self.default is not None else 0.0

    def columns(self, group: str) -> list[InputSpec]:
        """This feature's model columns, named ``<group>__<name>[__<value>]``."""
        base = f"{group}__{self.name}"
        if self.kind is FeatureKind.NUMERIC:
            return [InputSpec(name=base, min=self.min, max=self.max)]
        if self.encoding is Encoding.INDEX:
            return [InputSpec(name=base, min=0, max=len(self.values) - 1)]
        return [InputSpec(name=f"{base}__{_column_safe(v)}", min=0, max=1) for v in self.values]


def _column_safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", value)


class RankingSpec(BaseModel):
    """A ranker's features. The model's input row is, in this order: the user features,
    the item features, the context features, each group in the order listed here, a
    categorical feature taking ``len(values)`` 0/1 columns when one-hot encoded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Names the feature set in the online store (ranking/features.py has the key layout).
    feature_set: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    user: list[FeatureSpec] = Field(min_length=1)
    item: list[FeatureSpec] = Field(min_length=1)
    context: list[FeatureSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> RankingSpec:
        for group in ("user", "item", "context"):
            features: list[FeatureSpec] = getattr(self, group)
            names = [f.name for f in features]
            if len(set(names)) != len(names):
                raise ValueError(f"ranking.{group}: feature names must be unique")
            if group != "context":
                missing = [f.name for f in features if f.default is None]
                if missing:
                    raise ValueError(f"ranking.{group}: a cold-start default for {missing}")
        columns = [c.name for c in self.columns]
        if len(set(columns)) != len(columns):
            raise ValueError("ranking: one-hot column names collide; rename a value")
        return self

    @cached_property
    def columns(self) -> list[InputSpec]:
        """The model's input columns, in row order."""
        return [
            column
            for group in ("user", "item", "context")
            for feature in getattr(self, group)
            for column in feature.columns(group)
        ]


MAX_REFERENCE_BINS = 32  # label values per feature in the drift metrics: bounded


class FeatureReference(BaseModel):
    """How one input was distributed in the training data: bin ``i`` holds the values
    ``edges[i-1] <= x < edges[i]`` (the first bin everything below ``edges[0]``, the
    last everything from ``edges[-1]`` up), and ``shares[i]`` of the training rows fell
    in it. Quantile edges for a continuous input; one bin per value (edges halfway
    between values) for a bool or a code with a few values (drift.py builds both)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    edges: list[float] = Field(max_length=MAX_REFERENCE_BINS - 1)
    shares: list[float] = Field(min_length=1, max_length=MAX_REFERENCE_BINS)

    @model_validator(mode="after")
    def _consistent(self) -> FeatureReference:
        if len(self.shares) != len(self.edges) + 1:
            raise ValueError(
                f"{len(self.edges)} edges make {len(self.edges) + 1} bins, "
                f"but there are {len(self.shares)} shares"
            )
        if not all(math.isfinite(e) for e in self.edges):
            raise ValueError("edges must be finite numbers")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must be strictly increasing")
        if any(not 0 <= s <= 1 for s in self.shares):
            raise ValueError("each share must be between 0 and 1")
        if abs(math.fsum(self.shares) - 1) > 1e-6:
            raise ValueError(f"shares must sum to 1, not {math.fsum(self.shares):.6g}")
        return self


class Reference(BaseModel):
    """The training data's distribution of some inputs, for drift scores (drift.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = Field(ge=1, description="training rows the shares were counted from")
    source: str = Field("", max_length=200, description="which data, for people")
    features: dict[str, FeatureReference] = Field(min_length=1)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _ranking_inputs(cls, data: Any) -> Any:
        """A ranker's model columns follow from its ``ranking`` section; written out as
        ``inputs`` so every tool that reads inputs (warm-up, /models) sees them. A
        manifest may leave them out; if it names them, they must be the derived ones."""
        if isinstance(data, dict) and data.get("task") == Task.RANKING.value:
            if not isinstance(data.get("ranking"), dict):
                raise ValueError("task ranking needs a ranking section")
            if "inputs" not in data:
                spec = RankingSpec.model_validate(data["ranking"])
                return {**data, "inputs": [c.model_dump() for c in spec.columns]}
        return data

    name: str
    version: str = Field(pattern=r"^(?:0|[1-9][0-9]{0,8})$")
    task: Task
    format: ModelFormat
    file: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="model file in this directory")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: list[InputSpec] = Field(min_length=1)
    outputs: OutputSpec = Field(default_factory=OutputSpec)
    batching: BatchingOverride = Field(default_factory=BatchingOverride)
    # Task ``ranking`` only: where the features come from and how they become a row.
    ranking: RankingSpec | None = None
    description: str = ""
    # Free-form: training metrics, created_at, data set, owner ...
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Optional: the training data's distribution per input; without it, no drift score.
    reference: Reference | None = None

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
        if self.task in (Task.REGRESSION, Task.RANKING) and n:
            raise ValueError(f"a {self.task.value} model has no classes")
        if (self.task is Task.RANKING) != (self.ranking is not None):
            raise ValueError("a ranking section goes with task ranking, and only with it")
        if self.ranking is not None:
            derived = [c.name for c in self.ranking.columns]
            if names != derived:
                raise ValueError(
                    f"a ranker's inputs are its ranking section's columns, in order: {derived}"
                )
        if self.reference is not None:
            unknown = sorted(set(self.reference.features) - set(names))
            if unknown:
                raise ValueError(f"reference.features: {unknown} are not inputs of this model")
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
