"""What a model's output rows mean, per task, as the native API's answer fields.

The prediction service returns the model's own output rows (``(n,)`` probabilities or
values, ``(n, classes)`` probabilities); the native protocol answers these fields, and
the prediction log records them, so both show the same thing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelgate.inference.manifest import Manifest, Task


def native_answers(manifest: Manifest, out: np.ndarray) -> list[dict[str, Any]]:
    """Model output rows → the native response fields, one dict per row. Converted to
    Python numbers once per batch (``tolist``), not value by value."""
    task = manifest.task
    classes = manifest.outputs.classes
    if task is Task.REGRESSION:
        return [{"prediction": v} for v in out.reshape(len(out), -1)[:, 0].tolist()]
    if task is Task.BINARY:
        answers = []
        for p in out.reshape(-1).tolist():
            label = int(p >= 0.5)
            answers.append(
                {
                    "prediction": label,
                    "probability": p,
                    "prediction_class": classes[label],
                    "class_name": classes[label],
                }
            )
        return answers
    return [
        {
            "prediction": label,
            "probabilities": dict(zip(classes, probs, strict=True)),
            "prediction_class": classes[label],
            "class_name": classes[label],
        }
        for label, probs in zip(out.argmax(axis=1).tolist(), out.tolist(), strict=True)
    ]
