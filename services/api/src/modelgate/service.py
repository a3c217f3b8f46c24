"""The path of one prediction, shared by every protocol (native, V1, V2).

validated rows → cache lookup → batcher → model (in the inference thread) → cache store

Routes parse their wire format, call ``PredictionService`` and shape its answer; nothing
below this line knows which protocol asked.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelgate.batching import Batcher
from modelgate.cache import NullCache, PredictionCache, cache_key
from modelgate.logging import request_id_var
from modelgate.manifest import Task
from modelgate.metrics import Metrics
from modelgate.predlog import PredictionLog, Record
from modelgate.repository import ModelRepository
from modelgate.runtime import LoadedModel
from modelgate.settings import BatchingSettings
from modelgate.validation import InputValidator


@dataclass
class _Lane:
    model: LoadedModel
    batcher: Batcher
    validator: InputValidator


@dataclass
class BatchResult:
    """Outputs of one request: one dict per row, in order."""

    model: LoadedModel
    outputs: list[dict[str, Any]]
    cached: list[bool]
    batch_rows: int  # rows in the largest tensor call this request rode in (0: all cached)


def format_outputs(model: LoadedModel, out: np.ndarray) -> list[dict[str, Any]]:
    """Model output rows → the native response fields, one dict per row. Converted to
    Python numbers once per batch (``tolist``), not value by value."""
    task = model.manifest.task
    classes = model.manifest.outputs.classes
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


@dataclass
class PredictionService:
    repository: ModelRepository
    executor: Executor
    batching: BatchingSettings
    cache: PredictionCache = field(default_factory=NullCache)
    metrics: Metrics | None = None
    prediction_log: PredictionLog | None = None
    # HTTP requests in flight in this worker: batchers wait for company only if some may come.
    in_flight: Callable[[], int] | None = None
    last_prediction_at: float | None = None  # epoch seconds
    # Per loaded version (keyed by identity, so a reloaded version gets fresh ones).
    _lanes: dict[int, _Lane] = field(default_factory=dict)
    _seen_snapshot: object = None

    def _lane(self, model: LoadedModel) -> _Lane:
        snapshot = self.repository.models
        if snapshot is not self._seen_snapshot:
            self._seen_snapshot = snapshot
            self._prune()
        lane = self._lanes.get(id(model))
        if lane is None or lane.model is not model:
            lane = self._lanes[id(model)] = _Lane(
                model, self._new_batcher(model), InputValidator(model.manifest)
            )
        return lane

    def validator(self, model: LoadedModel) -> InputValidator:
        return self._lane(model).validator

    def _new_batcher(self, model: LoadedModel) -> Batcher:
        override = model.manifest.batching
        delay_ms = (
            override.max_batch_delay_ms
            if override.max_batch_delay_ms is not None
            else self.batching.max_batch_delay_ms
        )
        return Batcher(
            run_model=model.run,
            executor=self.executor,
            max_rows=override.max_batch_size or self.batching.max_batch_size,
            max_delay_s=delay_ms / 1000.0,
            max_queue_rows=self.batching.max_queue_rows,
            on_batch=(
                None
                if self.metrics is None
                else functools.partial(self.metrics.observe_batch, model.name, model.version)
            ),
            in_flight=self.in_flight,
            inline_below_s=self.batching.inline_below_ms / 1000.0,
        )

    def _prune(self) -> None:
        """Let the batchers of versions no longer loaded finish their queue and stop."""
        live = {id(m) for entry in self.repository.models.values() for m in entry.versions.values()}
        for key in [k for k in self._lanes if k not in live]:
            lane = self._lanes.pop(key)
            asyncio.get_running_loop().create_task(lane.batcher.close())

    async def run(self, model: LoadedModel, rows: np.ndarray) -> BatchResult:
        """Predict validated rows with one model version, through the cache."""
        started = time.perf_counter()
        if self.cache.enabled:
            outputs, cached, batch_rows = await self._through_cache(model, rows)
        else:  # every row goes to the model: no keys to hash, nothing to merge
            out, batch_rows = await self._lane(model).batcher.submit(rows)
            outputs = format_outputs(model, out)
            cached = [False] * len(outputs)
        self.last_prediction_at = now = time.time()
        if self.metrics is not None:
            self.metrics.count_predictions(
                model.name, model.version, len(rows), len(rows) - sum(cached)
            )
        result = BatchResult(model=model, outputs=outputs, cached=cached, batch_rows=batch_rows)
        if self.prediction_log is not None:
            self.prediction_log.append(
                Record(
                    ts=now,
                    request_id=request_id_var.get(),
                    manifest=model.manifest,
                    rows=rows,
                    outputs=outputs,
                    cached=cached,
                    latency_ms=elapsed_ms(started),
                )
            )
        return result

    async def _through_cache(
        self, model: LoadedModel, rows: np.ndarray
    ) -> tuple[list[dict[str, Any]], list[bool], int]:
        """Outputs per row (cached ones from the cache, the rest from the model, then
        stored), which rows were cached, and the rows of the model call (0: none)."""
        tag = model.manifest.digest
        keys = [cache_key(model.name, model.version, model.sha256, tag, r) for r in rows]
        hits = await self.cache.get_many(keys)
        missing = [i for i, hit in enumerate(hits) if hit is None]
        outputs: list[dict[str, Any] | None] = list(hits)
        batch_rows = 0
        if missing:
            todo = rows if len(missing) == len(rows) else rows[missing]
            out, batch_rows = await self._lane(model).batcher.submit(todo)
            answers = format_outputs(model, out)
            for i, answer in zip(missing, answers, strict=True):
                outputs[i] = answer
            await self.cache.set_many({keys[i]: a for i, a in zip(missing, answers, strict=True)})
        missing_set = set(missing)
        cached = [i not in missing_set for i in range(len(rows))]
        return [o for o in outputs if o is not None], cached, batch_rows

    @property
    def queued_rows(self) -> int:
        """Rows waiting for the model in this worker, over every model version."""
        return sum(lane.batcher.queued_rows for lane in self._lanes.values())

    async def close(self) -> None:
        for lane in list(self._lanes.values()):
            await lane.batcher.close()
        self._lanes.clear()
        await self.cache.close()
        if self.prediction_log is not None:
            await asyncio.to_thread(self.prediction_log.close)


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
