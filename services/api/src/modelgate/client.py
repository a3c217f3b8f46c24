"""A Python client for modelgate's native API: ``Client`` (sync) and ``AsyncClient``.

::

    from modelgate.client import Client

    with Client("http://127.0.0.1:8080", api_key="…") as mg:
        answer = mg.predict({"age": 35, "income": 75000, …}, model="churn")
        print(answer.prediction, answer.model_version, answer.request_id)

Both classes share one policy (``_Policy``): the paths, the headers, when to retry and
for how long to wait, and the parsing of answers into typed results. Only the I/O
differs, so the sync and async clients cannot drift apart.

Retries: a call is retried on 429 and 503 (waiting what ``Retry-After`` says), on 502 and
504 from a gateway, and on connection errors and timeouts (exponential backoff with
jitter). Any other 4xx is the caller's mistake and is never retried: sending it again
gives the same answer. Predictions are pure functions of their input, so a retried POST
is safe. Every call sends one ``X-Request-ID`` (the caller's, or a fresh one), the same
on each of its retries, so the server's log lines for one call share an id.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

log = logging.getLogger("modelgate.client")

# Statuses worth sending again: the server (or the gateway before it) asked us to wait,
# or could not reach a replica. Every other 4xx/5xx is final.
RETRY_STATUSES = frozenset({429, 502, 503, 504})

Features = Mapping[str, Any] | Sequence[float]


class APIError(Exception):
    """A final error answer: the status, modelgate's error body, and the request id."""

    def __init__(self, status_code: int, body: Mapping[str, Any], request_id: str) -> None:
        self.status_code = status_code
        self.code = str(body.get("error", "http_error"))
        self.message = str(body.get("message", body.get("error", "")))
        self.field: str | None = body.get("field")
        self.body = dict(body)
        self.request_id = request_id
        super().__init__(f"{status_code} {self.code}: {self.message} (request {request_id})")


@dataclass(frozen=True)
class Prediction:
    """One instance's answer. ``output`` holds the model's fields (``prediction``, and
    ``probability``/``probabilities``/``class_name`` for classifiers)."""

    output: dict[str, Any]
    model_name: str
    model_version: str
    cached: bool
    prediction_id: str = ""
    latency_ms: float = 0.0
    timestamp: str = ""
    request_id: str = ""

    @property
    def prediction(self) -> Any:
        return self.output["prediction"]


@dataclass(frozen=True)
class BatchPrediction:
    predictions: list[Prediction]
    model_name: str
    model_version: str
    total_time_ms: float
    timestamp: str
    request_id: str


@dataclass(frozen=True)
class RankedItem:
    item_id: int
    score: float
    rank: int  # 1 for the highest score


@dataclass(frozen=True)
class Ranking:
    """A ``/rank`` answer: the items by score, highest first."""

    user_id: int
    items: list[RankedItem]
    model_name: str
    model_version: str
    user_default: bool  # the user's features were cold-start defaults
    item_defaults: list[int]  # items whose features were defaults
    latency_ms: float
    timestamp: str
    request_id: str


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    default: bool
    task: str
    format: str
    sha256: str
    loaded_at: str


@dataclass(frozen=True)
class Model:
    name: str
    default_version: str | None
    pinned: bool
    versions: list[ModelVersion]


@dataclass(frozen=True)
class Models:
    default_model: str | None
    instance: str
    models: list[Model]

    def __getitem__(self, name: str) -> Model:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)


@dataclass(frozen=True)
class Health:
    """``/health``; ``raw`` keeps every field, including ones newer than this client."""

    status: str
    instance: str
    models: dict[str, list[str]]
    default_model: str | None
    default_model_version: str | None
    uptime_seconds: float
    raw: dict[str, Any] = field(repr=False)


# Prediction bodies' envelope fields; the rest of each row is the model's output.
_ENVELOPE = frozenset(
    {"model_name", "model_version", "cached", "prediction_id", "latency_ms", "timestamp"}
)


def _prediction(body: Mapping[str, Any], request_id: str) -> Prediction:
    return Prediction(
        output={k: v for k, v in body.items() if k not in _ENVELOPE},
        model_name=body["model_name"],
        model_version=body["model_version"],
        cached=bool(body.get("cached", False)),
        prediction_id=body.get("prediction_id", ""),
        latency_ms=float(body.get("latency_ms", 0.0)),
        timestamp=body.get("timestamp", ""),
        request_id=request_id,
    )


def _batch(body: Mapping[str, Any], request_id: str) -> BatchPrediction:
    envelope = {"model_name": body["model_name"], "model_version": body["model_version"]}
    return BatchPrediction(
        predictions=[_prediction({**row, **envelope}, request_id) for row in body["predictions"]],
        model_name=body["model_name"],
        model_version=body["model_version"],
        total_time_ms=float(body.get("total_time_ms", 0.0)),
        timestamp=body.get("timestamp", ""),
        request_id=request_id,
    )


def _ranking(body: Mapping[str, Any], request_id: str) -> Ranking:
    defaults = body.get("defaults_used", {})
    return Ranking(
        user_id=body["user_id"],
        items=[RankedItem(p["item_id"], p["score"], p["rank"]) for p in body["predictions"]],
        model_name=body["model_name"],
        model_version=body["model_version"],
        user_default=bool(defaults.get("user", False)),
        item_defaults=list(defaults.get("items", [])),
        latency_ms=float(body.get("latency_ms", 0.0)),
        timestamp=body.get("timestamp", ""),
        request_id=body.get("request_id", request_id),
    )


def _rank_body(
    user_id: int, item_ids: Sequence[int], context: Mapping[str, Any] | None, top_k: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": user_id, "item_ids": list(item_ids)}
    if context is not None:
        body["context"] = dict(context)
    if top_k is not None:
        body["top_k"] = top_k
    return body


def _models(body: Mapping[str, Any]) -> Models:
    return Models(
        default_model=body.get("default_model"),
        instance=body.get("instance", ""),
        models=[
            Model(
                name=m["name"],
                default_version=m.get("default_version"),
                pinned=bool(m.get("pinned", False)),
                versions=[
                    ModelVersion(
                        name=v["name"],
                        version=v["version"],
                        default=bool(v["default"]),
                        task=v.get("task", ""),
                        format=v.get("format", ""),
                        sha256=v.get("sha256", ""),
                        loaded_at=v.get("loaded_at", ""),
                    )
                    for v in m["versions"]
                ],
            )
            for m in body["models"]
        ],
    )


def _health(body: Mapping[str, Any]) -> Health:
    return Health(
        status=body["status"],
        instance=body.get("instance", ""),
        models={k: list(v) for k, v in body.get("models", {}).items()},
        default_model=body.get("default_model"),
        default_model_version=body.get("default_model_version"),
        uptime_seconds=float(body.get("uptime_seconds", 0.0)),
        raw=dict(body),
    )


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


def _predict_path(kind: str, model: str | None, version: str | None) -> str:
    if model is None:
        if version is not None:
            raise ValueError("a version needs a model name")
        return f"/{kind}"
    base = f"/models/{quote(model, safe='')}"
    if version is not None:
        base += f"/versions/{quote(version, safe='')}"
    return f"{base}/{kind}"


@dataclass(frozen=True)
class _Policy:
    """What the sync and async clients share: headers, the retry decision, parsing."""

    api_key: str | None
    retries: int
    backoff_s: float
    max_backoff_s: float
    max_retry_after_s: float

    def headers(self, request_id: str | None) -> dict[str, str]:
        headers = {"X-Request-ID": request_id or uuid.uuid4().hex}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        return headers

    def backoff(self, attempt: int) -> float:
        # Full jitter: clients that failed together don't retry together.
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2**attempt))  # noqa: S311

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None: don't retry."""
        if attempt >= self.retries:
            return None
        if response is None:  # connection error or timeout
            return self.backoff(attempt)
        if response.status_code not in RETRY_STATUSES:
            return None
        asked = retry_after_seconds(response.headers.get("retry-after"))
        if asked is None:
            return self.backoff(attempt)
        # A wait longer than the caller accepts (a quota that resets in a minute) is
        # answered now, as the 429 it is, rather than by hanging.
        return asked if asked <= self.max_retry_after_s else None

    @staticmethod
    def result(response: httpx.Response, request_id: str) -> Any:
        request_id = response.headers.get("x-request-id", request_id)
        try:
            body = response.json()
        except ValueError:
            body = {"error": "http_error", "message": response.text[:200]}
        if response.is_success:
            return body
        if not isinstance(body, dict):
            body = {"error": "http_error", "message": str(body)[:200]}
        raise APIError(response.status_code, body, request_id)


class _Base:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        max_retry_after_s: float = 10.0,
    ) -> None:
        """``retries``: attempts after the first; ``max_retry_after_s``: the longest
        ``Retry-After`` waited for (a longer one raises the 429/503 at once)."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.policy = _Policy(api_key, retries, backoff_s, max_backoff_s, max_retry_after_s)


def _log_retry(method: str, path: str, attempt: int, wait: float, why: str, rid: str) -> None:
    log.info(
        "retrying %s %s after %s in %.2fs (attempt %d, request %s)",
        method,
        path,
        why,
        wait,
        attempt + 2,
        rid,
        extra={"retry_wait_s": wait, "retry_reason": why, "request_id": rid},
    )


class Client(_Base):
    """The synchronous client; use as a context manager, or call ``close()``."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(
        self, method: str, path: str, json: Any = None, request_id: str | None = None
    ) -> tuple[Any, str]:
        headers = self.policy.headers(request_id)
        rid = headers["X-Request-ID"]
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=json, headers=headers)
            except httpx.TransportError as exc:
                wait = self.policy.delay(attempt, None)
                if wait is None:
                    raise
                _log_retry(method, path, attempt, wait, type(exc).__name__, rid)
            else:
                wait = self.policy.delay(attempt, response)
                if wait is None:
                    return self.policy.result(response, rid), response.headers.get(
                        "x-request-id", rid
                    )
                _log_retry(method, path, attempt, wait, str(response.status_code), rid)
            time.sleep(wait)
            attempt += 1

    def predict(
        self,
        features: Features,
        *,
        model: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
    ) -> Prediction:
        """One instance: a mapping by input name, or a list in the manifest's order."""
        path = _predict_path("predict", model, version)
        body, rid = self._call("POST", path, {"features": features}, request_id)
        return _prediction(body, rid)

    def predict_batch(
        self,
        instances: Sequence[Features],
        *,
        model: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
    ) -> BatchPrediction:
        path = _predict_path("predict/batch", model, version)
        body, rid = self._call("POST", path, {"instances": list(instances)}, request_id)
        return _batch(body, rid)

    def rank(
        self,
        user_id: int,
        item_ids: Sequence[int],
        *,
        context: Mapping[str, Any] | None = None,
        top_k: int | None = None,
        model: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
    ) -> Ranking:
        """Rank a user's candidate items (a ranking model; features from the store)."""
        path = _predict_path("rank", model, version)
        body = _rank_body(user_id, item_ids, context, top_k)
        answer, rid = self._call("POST", path, body, request_id)
        return _ranking(answer, rid)

    def models(self) -> Models:
        return _models(self._call("GET", "/models")[0])

    def health(self) -> Health:
        return _health(self._call("GET", "/health")[0])


class AsyncClient(_Base):
    """The asyncio client; use as an async context manager, or await ``aclose()``."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self, method: str, path: str, json: Any = None, request_id: str | None = None
    ) -> tuple[Any, str]:
        headers = self.policy.headers(request_id)
        rid = headers["X-Request-ID"]
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, json=json, headers=headers)
            except httpx.TransportError as exc:
                wait = self.policy.delay(attempt, None)
                if wait is None:
                    raise
                _log_retry(method, path, attempt, wait, type(exc).__name__, rid)
            else:
                wait = self.policy.delay(attempt, response)
                if wait is None:
                    return self.policy.result(response, rid), response.headers.get(
                        "x-request-id", rid
                    )
                _log_retry(method, path, attempt, wait, str(response.status_code), rid)
            await asyncio.sleep(wait)
            attempt += 1

    async def predict(
        self,
        features: Features,
        *,
        model: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
    ) -> Prediction:
        path = _predict_path("predict", model, version)
        body, rid = await self._call("POST", path, {"features": features}, request_id)
        return _prediction(body, rid)

    async def predict_batch(
        self,
        instances: Sequence[Features],
        *,
        model: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
    ) -> BatchPrediction:
        path = _predict_path("predict/batch", model, version)
        body, rid = await self._call("POST", path, {"instances": list(instances)}, request_id)
        return _batch(body, rid)

    async def rank(
        self,
        user_id: int,
        item_ids: Sequence[int],
        *,
        context: Mapping[str, Any] | None = None,
        top_k: int | None = None,
        model: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
    ) -> Ranking:
        path = _predict_path("rank", model, version)
        body = _rank_body(user_id, item_ids, context, top_k)
        answer, rid = await self._call("POST", path, body, request_id)
        return _ranking(answer, rid)

    async def models(self) -> Models:
        return _models((await self._call("GET", "/models"))[0])

    async def health(self) -> Health:
        return _health((await self._call("GET", "/health"))[0])
