"""Models as named tensors, for the standard protocols (V2 / Open Inference Protocol, V1).

Every modelgate model takes one FP32 tensor ``input`` of shape ``[-1, F]`` (F features in
manifest order) and gives, per task:

| task       | outputs                                                        |
|------------|----------------------------------------------------------------|
| binary     | ``probability`` FP32 ``[-1]``, ``prediction`` INT64 ``[-1]``   |
| multiclass | ``probabilities`` FP32 ``[-1, C]``, ``prediction`` INT64 ``[-1]`` |
| regression | ``prediction`` FP32 ``[-1]``                                   |

The tensors are computed from the native answer of each row (cached or not), so every
protocol answers exactly what the native API answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modelgate.manifest import Manifest, Task

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
    return TensorSpec(INPUT_NAME, "FP32", [-1, len(manifest.inputs)])


def output_specs(manifest: Manifest) -> list[TensorSpec]:
    if manifest.task is Task.REGRESSION:
        return [TensorSpec("prediction", "FP32", [-1])]
    if manifest.task is Task.BINARY:
        return [TensorSpec("probability", "FP32", [-1]), TensorSpec("prediction", "INT64", [-1])]
    n_classes = len(manifest.outputs.classes)
    return [
        TensorSpec("probabilities", "FP32", [-1, n_classes]),
        TensorSpec("prediction", "INT64", [-1]),
    ]


def output_tensors(manifest: Manifest, outputs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Native answers (one dict per row) → the named output tensors."""
    tensors: dict[str, np.ndarray] = {}
    for spec in output_specs(manifest):
        if spec.name == "probabilities":
            classes = manifest.outputs.classes
            values: Any = [[o["probabilities"][c] for c in classes] for o in outputs]
        else:
            values = [o[spec.name] for o in outputs]
        tensors[spec.name] = np.asarray(values, dtype=NUMPY_TYPES[spec.datatype])
    return tensors


def row_values(manifest: Manifest, output: dict[str, Any]) -> dict[str, Any]:
    """One native answer → its output tensors' values for that row (V1's row format)."""
    row: dict[str, Any] = {}
    for spec in output_specs(manifest):
        if spec.name == "probabilities":
            row[spec.name] = [output["probabilities"][c] for c in manifest.outputs.classes]
        else:
            row[spec.name] = output[spec.name]
    return row
