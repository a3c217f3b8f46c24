"""Models as named tensors, for the standard protocols (V2 / Open Inference Protocol, V1).

Every modelgate model takes one FP32 tensor ``input`` of shape ``[-1, F]`` (F features in
manifest order) and gives, per task:

| task       | outputs                                                        |
|------------|----------------------------------------------------------------|
| binary     | ``probability`` FP32 ``[-1]``, ``prediction`` INT64 ``[-1]``   |
| multiclass | ``probabilities`` FP32 ``[-1, C]``, ``prediction`` INT64 ``[-1]`` |
| regression | ``prediction`` FP32 ``[-1]``                                   |

The tensors are computed from the model's output rows (cached or not) with the native
API's rules, so every protocol answers exactly what the native API answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from modelgate.inference.manifest import Manifest, Task

INPUT_NAME = "input"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # V2 datatype name
    shape: list[int]  # -1: the batch dimension

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


# V2 datatype → numpy dtype (little-endian, as the binary extension requires).
NUMPY_TYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}  # fmt: skip


def input_spec(manifest: Manifest) -> TensorSpec:
    return _input_spec(len(manifest.inputs))


def output_specs(manifest: Manifest) -> list[TensorSpec]:
    """The model's output tensors, in order. Shared and read-only: every request of a V2
    or V1 route asks, so each shape is built once (``cache``), not per request."""
    fixed = manifest.task in (Task.REGRESSION, Task.BINARY)
    n_classes = 0 if fixed else len(manifest.outputs.classes)
    return _output_specs(manifest.task, n_classes)


@cache
def _input_spec(n_features: int) -> TensorSpec:
    return TensorSpec(INPUT_NAME, "FP32", [-1, n_features])


@cache
def _output_specs(task: Task, n_classes: int) -> list[TensorSpec]:
    if task is Task.REGRESSION:
        return [TensorSpec("prediction", "FP32", [-1])]
    if task is Task.BINARY:
        return [TensorSpec("probability", "FP32", [-1]), TensorSpec("prediction", "INT64", [-1])]
    return [
        TensorSpec("probabilities", "FP32", [-1, n_classes]),
        TensorSpec("prediction", "INT64", [-1]),
    ]


def output_tensors(manifest: Manifest, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """The model's output rows (``PredictionService``'s, cached or not) → the named
    output tensors; the labels are the native API's (``answers.py``): p >= 0.5, argmax."""
    if manifest.task is Task.REGRESSION:
        return {"prediction": outputs.reshape(len(outputs), -1)[:, 0]}
    if manifest.task is Task.BINARY:
        probability = outputs.reshape(-1)
        return {"probability": probability, "prediction": (probability >= 0.5).astype(np.int64)}
    return {"probabilities": outputs, "prediction": outputs.argmax(axis=1).astype(np.int64)}


def row_values(manifest: Manifest, outputs: np.ndarray) -> list[dict[str, Any]]:
    """The model's output rows → each row's output tensor values (V1's row format)."""
    columns = {name: t.tolist() for name, t in output_tensors(manifest, outputs).items()}
    names = [spec.name for spec in output_specs(manifest)]
    return [{name: columns[name][i] for name in names} for i in range(len(outputs))]
