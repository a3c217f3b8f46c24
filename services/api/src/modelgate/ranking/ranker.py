"""One ranking: fetch the features (one Redis round trip), assemble ``[n_items, F]``
rows, score them in one tensor call, order them.

What a route calls (the route formats the answer; the core speaks arrays)::

    ranker = Ranker.from_settings(settings)         # once per worker (lifespan)
    request = ranker.parse(model, payload)          # 422 naming the field
    result = await ranker.rank(model, request)      # 503 if the store can't answer

or, to run the tensor call elsewhere (e.g. the batcher's thread)::

    assembled = await ranker.assemble(model, request)
    result = ranker.finish(assembled, scores=model.run(assembled.rows))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelgate.errors import FieldError, InvalidInput
from modelgate.inference.manifest import Manifest, RankingSpec, Task
from modelgate.inference.runtime import LoadedModel
from modelgate.ranking.features import FeatureStore, FeaturesUnavailable
from modelgate.ranking.request import RankRequest, RankRequestParser
from modelgate.ranking.rows import ColumnsMissing, RowAssembler
from modelgate.settings import Settings

# Compiled plans kept per manifest; a worker serves a few versions at a time.
MAX_PLANS = 64


@dataclass(frozen=True)
class Plan:
    """What a ranker's manifest compiles to, once."""

    spec: RankingSpec
    parser: RankRequestParser
    rows: RowAssembler


@dataclass(frozen=True)
class Assembled:
    request: RankRequest
    rows: np.ndarray  # [n_items, F] float32, in request order
    user_default: bool  # the store didn't know the user: its defaults were used
    item_defaults: tuple[int, ...]  # the items whose defaults were used, in request order
    feature_versions: dict[str, str]  # entity → the feature-set version read
    fetch_ms: float


@dataclass(frozen=True)
class RankResult:
    """The ``top_k`` best items, best first; ranks are 1..len(item_ids)."""

    item_ids: list[int]
    scores: list[float]
    user_default: bool
    item_defaults: tuple[int, ...]
    feature_versions: dict[str, str]
    fetch_ms: float

    @property
    def ranks(self) -> range:
        return range(1, len(self.item_ids) + 1)


def order(scores: np.ndarray, top_k: int) -> np.ndarray:
    """Positions, best first: score descending, ties in request order (a stable sort),
    a NaN score last."""
    key = np.where(np.isnan(scores), -np.inf, scores)
    return np.argsort(-key, kind="stable")[:top_k]


@dataclass
class Ranker:
    store: FeatureStore
    max_items: int = 100
    _plans: dict[str, Plan] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Ranker | None:
        """One per worker, built in the lifespan; None without Redis (no feature store)."""
        if not settings.redis_url:
            return None
        r = settings.ranking
        store = FeatureStore.from_url(
            settings.redis_connection_url, r.timeout_ms / 1000, r.breaker_seconds
        )
        return cls(store, r.max_items)

    async def close(self) -> None:
        await self.store.close()

    def plan(self, manifest: Manifest) -> Plan:
        found = self._plans.get(manifest.digest)
        if found is not None:
            return found
        if manifest.task is not Task.RANKING or manifest.ranking is None:
            raise InvalidInput.for_fields(
                [FieldError("model", f"{manifest.name} is a {manifest.task.value} model")]
            )
        spec = manifest.ranking
        if len(self._plans) >= MAX_PLANS:
            self._plans.clear()
        plan = self._plans[manifest.digest] = Plan(
            spec, RankRequestParser(spec, self.max_items), RowAssembler(spec)
        )
        return plan

    def parse(self, model: LoadedModel, payload: Any) -> RankRequest:
        return self.plan(model.manifest).parser.parse(payload)

    async def assemble(self, model: LoadedModel, request: RankRequest) -> Assembled:
        plan = self.plan(model.manifest)
        start = time.perf_counter()
        fetched = await self.store.fetch(plan.spec.feature_set, request.user_id, request.item_ids)
        fetch_ms = (time.perf_counter() - start) * 1000
        user, items = fetched.user, fetched.items
        try:
            user_raw = user.values[:, plan.rows.user.pick(user.columns)]
            item_raw = items.values[:, plan.rows.item.pick(items.columns)]
        except ColumnsMissing as exc:
            raise FeaturesUnavailable(f"feature set {plan.spec.feature_set!r}: {exc}") from None
        user_known = bool(user.known[0])
        rows = plan.rows.assemble(user_raw, user_known, item_raw, items.known, request.context)
        return Assembled(
            request,
            rows,
            not user_known,
            tuple(i for i, k in zip(request.item_ids, items.known.tolist(), strict=True) if not k),
            {"user": user.version, "item": items.version},
            fetch_ms,
        )

    def finish(self, assembled: Assembled, scores: np.ndarray) -> RankResult:
        request = assembled.request
        best = order(scores.reshape(-1), request.top_k)
        ids = np.asarray(request.item_ids, np.int64)
        return RankResult(
            ids[best].tolist(),
            scores.reshape(-1)[best].tolist(),
            assembled.user_default,
            assembled.item_defaults,
            assembled.feature_versions,
            assembled.fetch_ms,
        )

    async def rank(self, model: LoadedModel, request: RankRequest) -> RankResult:
        """Fetch, assemble, score inline (a ranker's MLP on 100 rows takes tens of µs),
        order."""
        assembled = await self.assemble(model, request)
        return self.finish(assembled, model.run(assembled.rows))
