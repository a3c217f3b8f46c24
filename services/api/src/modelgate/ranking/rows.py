"""Features → the model's input rows: ``[n_items, F]`` float32.

A row is the user's features (the same for every item), then the item's, then the
request's context, each group in the manifest's order (``RankingSpec.columns``). A
categorical feature is one-hot (one 0/1 column per allowed value) or its value's index;
in the store and in a request's context it is its value's index / its value.

An id the store doesn't know gets every feature's default (cold start); so does a single
stored value that is not one (NaN, a category index out of range): features loaded by
hand should not be able to crash a ranking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from modelgate.inference.manifest import Encoding, FeatureKind, FeatureSpec, RankingSpec


class ColumnsMissing(ValueError):
    """The stored version lacks a feature the model needs."""


class Block:
    """One group's features (user, item or context) → its slice of the row."""

    def __init__(self, features: Sequence[FeatureSpec]) -> None:
        self.features = tuple(features)
        self.names = tuple(f.name for f in features)
        self.defaults = np.array([f.default_code() for f in features], np.float32)
        self.offsets = np.cumsum([0] + [f.width for f in features])[:-1].tolist()
        self.width = sum(f.width for f in features)
        # Numeric features are copied in one step (a per-request cost: ~100 rows each).
        numeric = [j for j, f in enumerate(features) if f.kind is FeatureKind.NUMERIC]
        self.numeric_src = np.array(numeric, np.int64)
        self.numeric_dst = np.array([self.offsets[j] for j in numeric], np.int64)
        self.categorical = [
            (j, f, self.offsets[j])
            for j, f in enumerate(features)
            if f.kind is FeatureKind.CATEGORICAL
        ]
        # The stored columns' positions of this block's features, per stored layout.
        self._picks: dict[tuple[str, ...], np.ndarray] = {}

    def pick(self, columns: tuple[str, ...]) -> np.ndarray:
        """Where each feature is among a stored version's ``columns`` (worked out once
        per layout: a feature set may hold more columns than a model uses)."""
        found = self._picks.get(columns)
        if found is None:
            missing = [n for n in self.names if n not in columns]
            if missing:
                raise ColumnsMissing(f"stored columns {list(columns)} lack {missing}")
            found = self._picks[columns] = np.array([columns.index(n) for n in self.names])
        return found

    def encode(self, raw: np.ndarray, known: np.ndarray) -> np.ndarray:
        """``raw``: [n, len(features)] values as stored; ``known``: [n] False where the
        id was unknown. Returns [n, width]."""
        n = raw.shape[0]
        values = raw if known.all() else np.where(known[:, None], raw, self.defaults)
        out = np.zeros((n, self.width), np.float32)
        if len(self.numeric_src):
            numeric = values[:, self.numeric_src]
            fallback = self.defaults[self.numeric_src]
            out[:, self.numeric_dst] = np.where(np.isfinite(numeric), numeric, fallback)
        for j, feature, offset in self.categorical:
            col = values[:, j]
            valid = (col >= 0) & (col < len(feature.values)) & (col == np.floor(col))
            code = np.where(valid, col, self.defaults[j]).astype(np.int64)
            if feature.encoding is Encoding.INDEX:
                out[:, offset] = code
            else:
                out[np.arange(n), offset + code] = 1.0
        return out


class RowAssembler:
    """Compiled once per manifest; ``assemble`` is called per request."""

    def __init__(self, spec: RankingSpec) -> None:
        self.user = Block(spec.user)
        self.item = Block(spec.item)
        self.context = Block(spec.context)
        self.width = self.user.width + self.item.width + self.context.width

    def encode_context(self, context: Mapping[str, float | str]) -> np.ndarray:
        """A validated, complete context (request.py) → its [1, width] block."""
        raw = np.array(
            [
                f.values.index(v) if isinstance(v, str) else v
                for f, v in ((f, context[f.name]) for f in self.context.features)
            ],
            np.float32,
        ).reshape(1, -1)
        return self.context.encode(raw, np.ones(1, bool))

    def assemble(
        self,
        user: np.ndarray,
        user_known: bool,
        items: np.ndarray,
        items_known: np.ndarray,
        context: Mapping[str, float | str],
    ) -> np.ndarray:
        """``user``: [1, k_user], ``items``: [n, k_item] in the block's feature order
        (``Block.pick`` selects them from a stored layout). Returns [n, F] float32."""
        n = items.shape[0]
        u = self.user.encode(user, np.array([user_known]))
        i = self.item.encode(items, items_known)
        out = np.empty((n, self.width), np.float32)
        w_u, w_i = self.user.width, self.item.width
        out[:, :w_u] = u
        out[:, w_u : w_u + w_i] = i
        out[:, w_u + w_i :] = self.encode_context(context)
        return out
