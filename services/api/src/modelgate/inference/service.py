"""The path of one prediction, shared by every protocol (native, V1, V2).

validated rows → cache lookup → batcher → model (in the inference thread) → cache store

It speaks arrays: rows in, the model's output rows and which were cached out. Each
protocol (``protocols/``) decodes its wire format into rows and shapes its own answer
from the outputs; nothing below this line knows which protocol asked. The cache stores
each row's raw outputs (``{"probability": p}``, ``{"probabilities": [...]}`` or
``{"prediction": v}``: the model's output tensor, ``tensors.py``).
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

from modelgate.inference.batching import Batcher
from modelgate.inference.manifest import Task
from modelgate.inference.repository import ModelRepository
from modelgate.inference.runtime import LoadedModel
from modelgate.inference.validation import InputValidator
from modelgate.observability.drift import InputHistogram
from modelgate.observability.logging import request_id_var
from modelgate.observability.metrics import Metrics
from modelgate.observability.predlog import PredictionLog, Record
from modelgate.observability.tracing import MODEL, VERSION, Tracing
from modelgate.protocols.tensors import output_specs
from modelgate.settings import BatchingSettings
from modelgate.shared.cache import NullCache, PredictionCache, cache_key


@dataclass
class _Lane:
    model: LoadedModel
    batcher: Batcher
    validator: InputValidator
    cached_as: str  # the cache stores a row's outputs as {cached_as: value(s)}
    histogram: InputHistogram | None = None  # served rows into the drift reference's bins


@dataclass
class Prediction:
    """What the model said for one request's rows: its own output rows, in order."""

    model: LoadedModel
    outputs: np.ndarray  # (n,) or (n, classes) float32, as LoadedModel.run gives them
    cached: list[bool]
    batch_rows: int  # rows in the largest tensor call this request rode in (0: all cached)


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
    # Count served rows into the manifests' reference bins (drift.py; needs ``metrics``).
    count_inputs: bool = False
    last_prediction_at: float | None = None  # epoch seconds
    tracing: Tracing | None = None  # None: tracing off
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
                model,
                self._new_batcher(model),
                InputValidator(model.manifest),
                output_specs(model.manifest)[0].name,
                InputHistogram(model.manifest)
                if self.count_inputs and model.manifest.reference is not None
                else None,
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
            tracing=self.tracing,
            trace_attributes={MODEL: model.name, VERSION: model.version},
        )

    def _prune(self) -> None:
        """Let the batchers of versions no longer loaded finish their queue and stop."""
        live = {id(m) for entry in self.repository.models.values() for m in entry.versions.values()}
        for key in [k for k in self._lanes if k not in live]:
            lane = self._lanes.pop(key)
            asyncio.get_running_loop().create_task(lane.batcher.close())

    async def run(self, model: LoadedModel, rows: np.ndarray) -> Prediction:
        """Predict validated rows with one model version, through the cache."""
        started = time.perf_counter()
        lane = self._lane(model)
        # A ranker's rows skip the cache: looking up a request's 100 rows (hash each, one
        # MGET, then a SET per miss) costs the worker and Redis far more than the tensor
        # call it could save (~25 µs for the demo ranker), and (user, item, context) rows
        # rarely repeat within a TTL. Measured under S6: 25 % of the event loop's time.
        if self.cache.enabled and model.manifest.task is not Task.RANKING:
            outputs, cached, batch_rows = await self._through_cache(lane, rows)
        else:  # every row goes to the model: no keys to hash, nothing to merge
            outputs, batch_rows = await lane.batcher.submit(rows)
            cached = [False] * len(rows)
        n_cached = sum(cached)
        self.last_prediction_at = now = time.time()
        if self.metrics is not None:
            self.metrics.count_predictions(
                model.name, model.version, len(rows), len(rows) - n_cached
            )
            # Every answered row, cached or not: drift is about what clients send.
            if lane.histogram is not None:
                self.metrics.count_features(model.name, model.version, lane.histogram, rows)
        trace_id = (
            None
            if self.tracing is None
            else self.tracing.note_prediction(model.name, model.version, len(rows), n_cached)
        )
        # A rank request writes its own line (protocols/ranking.py): user, items, ranks.
        if self.prediction_log is not None and model.manifest.task is not Task.RANKING:
            self.prediction_log.append(
                Record(
                    ts=now,
                    request_id=request_id_var.get(),
                    manifest=model.manifest,
                    rows=rows,
                    outputs=outputs,
                    cached=cached,
                    latency_ms=elapsed_ms(started),
                    trace_id=trace_id,
                )
            )
        return Prediction(model=model, outputs=outputs, cached=cached, batch_rows=batch_rows)

    async def _through_cache(
        self, lane: _Lane, rows: np.ndarray
    ) -> tuple[np.ndarray, list[bool], int]:
        """Output rows (cached ones from the cache, the rest from the model, then
        stored), which rows were cached, and the rows of the model call (0: none)."""
        model = lane.model
        name = lane.cached_as
        tag = model.manifest.digest
        keys = [cache_key(model.name, model.version, model.sha256, tag, r) for r in rows]
        if self.tracing is None:
            found = await self.cache.get_many(keys)
        else:
            with self.tracing.step("cache lookup", {"modelgate.rows": len(keys)}) as span:
                found = await self.cache.get_many(keys)
                if span is not None:
                    span.set_attribute("modelgate.rows.cached", sum(h is not None for h in found))
        hits = [_cached_row(hit, name) for hit in found]
        missing = [i for i, hit in enumerate(hits) if hit is None]
        if len(missing) == len(rows):
            outputs, batch_rows = await lane.batcher.submit(rows)
            fresh = outputs.tolist()
        else:
            batch_rows, fresh = 0, []
            if missing:
                out, batch_rows = await lane.batcher.submit(rows[missing])
                fresh = out.tolist()
            computed = iter(fresh)  # in row order, as ``missing`` is
            outputs = np.array(
                [next(computed) if hit is None else hit for hit in hits], dtype=np.float32
            )
        if missing:
            await self.cache.set_many(
                {keys[i]: {name: value} for i, value in zip(missing, fresh, strict=True)}
            )
        missing_set = set(missing)
        return outputs, [i not in missing_set for i in range(len(rows))], batch_rows

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


def _cached_row(hit: dict[str, Any] | None, name: str) -> float | list[float] | None:
    """A cached row's outputs, or None (a miss) for anything but what ``run`` stores: the
    cache is shared, and an entry written by another version of modelgate is not ours."""
    if hit is None:
        return None
    value = hit.get(name)
    if type(value) is float:
        return value
    if type(value) is list and value and all(type(v) is float for v in value):
        return value
    return None


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
