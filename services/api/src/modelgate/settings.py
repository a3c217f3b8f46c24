"""All configuration, read once from the environment (prefix ``MODELGATE_``).

Nested groups use ``__`` as the delimiter, e.g. ``MODELGATE_BATCHING__MAX_BATCH_SIZE=32``.
The settings object is built once per process and passed to ``create_app``. The other
settings classes are ``ProcessSettings`` below (gunicorn) and ``stack.config.StackConfig``
(the native stack, ``MODELGATE_STACK_*``); the command line (``cli.py``) only reads the
defaults of its own flags and passes the environment on to the processes it starts.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from limits import parse_many
from pydantic import BaseModel, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class BatchingSettings(BaseModel):
    """Defaults for dynamic batching; a model's manifest may override them."""

    # A batch only grows this large when that many rows are waiting, so the bound costs a
    # lightly loaded server nothing; under load, bigger calls are cheaper per row (the
    # bench's 1024-wide MLP: 15.7k rows/s in 32-row calls, 28.5k in 256-row calls).
    max_batch_size: int = Field(256, ge=1, le=65536, description="rows per tensor call")
    max_batch_delay_ms: float = Field(
        2.0, ge=0, le=1000, description="longest a request waits for others to join its batch"
    )
    # Bounded so overload turns into a quick 503 instead of unbounded latency and memory.
    max_queue_rows: int = Field(4096, ge=1, description="rows waiting per model version")
    # Handing a call to the inference thread and back costs ~0.4 ms on a busy 2-core VM;
    # a model whose calls take less (the demo MLPs: ~30 µs) runs them on the event loop.
    inline_below_ms: float = Field(
        0.2, ge=0, le=10, description="run tensor calls expected to be this quick inline; 0: never"
    )


class CacheSettings(BaseModel):
    """Prediction cache in Redis (used by the stack; off for a bare replica)."""

    enabled: bool = False
    ttl_seconds: int = Field(3600, ge=1)
    # Loopback Redis answers in well under a millisecond; past this, treat it as down.
    timeout_ms: float = Field(50, gt=0)
    # After a Redis failure, skip it this long: a dead Redis then costs nothing per request.
    breaker_seconds: float = Field(5, ge=0)
    # The answers a worker used last, also kept in its memory: a repeated input skips the
    # Redis round trip. Never stale (a key names the model file's sha256); 0 turns it off.
    local_entries: int = Field(4096, ge=0, le=1_000_000)


class RateLimitSettings(BaseModel):
    """Per-client quotas, shared through Redis (used by the stack; off by default)."""

    enabled: bool = False
    # limits' notation: "600/minute", "10/second;600/minute", …; per client, fleet-wide.
    predict: str = "600/minute"
    batch: str = "60/minute"
    # Past this a Redis call counts as failed and the in-memory fallback takes over.
    timeout_ms: float = Field(50, gt=0)

    @field_validator("predict", "batch")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_many(value)  # raises ValueError naming the bad limit
        return value


class PredictionLogSettings(BaseModel):
    """Every answered request as a JSON line (see predlog.py); off without a directory."""

    dir: Path | None = None
    # Records waiting for the writer thread; past this many, or this many bytes of them
    # (per worker: a 1000-row record is ~260 KB), they are dropped and counted.
    max_queue: int = Field(10_000, ge=1)
    max_queue_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    # A new file every rotate_s (UTC slots; a day keeps one file per replica per day) or
    # once the file holds max_file_bytes; past max_total_bytes, per replica, the oldest
    # files are deleted.
    rotate_s: int = Field(86_400, ge=60)
    max_file_bytes: int = Field(256 * 1024 * 1024, ge=4096)
    max_total_bytes: int = Field(4 * 1024 * 1024 * 1024, ge=8192)

    @model_validator(mode="after")
    def _total_holds_two_files(self) -> PredictionLogSettings:
        """The file being written is never deleted: a cap below two files would leave
        nothing but it, and the cap would be exceeded by design."""
        if self.max_total_bytes < 2 * self.max_file_bytes:
            raise ValueError("max_total_bytes must be at least twice max_file_bytes")
        return self

    @field_validator("dir", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        """``MODELGATE_PREDICTION_LOG__DIR=`` turns the log off (as compose users write
        it to override a default), rather than meaning the working directory."""
        if isinstance(value, str) and not value.strip():
            return None
        return value


class MlflowSettings(BaseModel):
    """The MLflow Model Registry as a model source (see registry.py and follow.py)."""

    # http(s)://host:port of an `mlflow server` that serves artifacts; empty: off.
    tracking_uri: str = ""
    # Aliases to follow, e.g. '["churn@champion"]': each worker pulls and serves what
    # the alias names, and follows it when it moves.
    follow: list[str] = Field(default_factory=list)
    poll_seconds: float = Field(30, gt=0, le=3600)
    timeout_seconds: float = Field(10, gt=0, le=300)

    @field_validator("follow")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        for item in value:
            name, sep, alias = item.partition("@")
            if not sep or not name or not alias:
                raise ValueError(f"{item!r}: expected NAME@ALIAS")
        return value


class RankingSettings(BaseModel):
    """Ranking models (ranking/): their online features live in Redis (``redis_url``)."""

    # Candidates per request: the tutorial's 100. Every item is a row of one tensor call
    # and a field of one Redis HMGET, so the bound keeps both small.
    max_items: int = Field(100, ge=1, le=10_000)
    # Loopback Redis answers a 100-item fetch in well under a millisecond; past this,
    # treat it as down (the request is answered 503, features_unavailable).
    timeout_ms: float = Field(50, gt=0)
    # After a Redis failure, answer 503 at once for this long instead of waiting each time.
    breaker_seconds: float = Field(5, ge=0)


class AuthSettings(BaseModel):
    """API keys are configured as sha256 hex digests, never in clear text."""

    api_key_sha256: list[str] = Field(default_factory=list)
    admin_key_sha256: str | None = None


class CorsSettings(BaseModel):
    """Cross-origin access for browser scripts (cors.py); off while no origin is allowed."""

    # Exact origins ("https://app.example.com"), or ["*"] for any (never with credentials).
    allow_origins: list[str] = Field(default_factory=list)
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "POST"])
    # What browser clients of this API send besides the CORS-safelisted headers.
    allow_headers: list[str] = Field(
        default_factory=lambda: ["Content-Type", "Authorization", "X-API-Key", "X-Request-ID"]
    )
    allow_credentials: bool = False
    # How long a browser may reuse a preflight answer, in seconds (Chromium caps it at 7200).
    max_age: int = Field(600, ge=0, le=86400)

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            # A browser's Origin header is exactly scheme://host[:port]: anything else
            # (a path, a trailing slash) would never match, silently.
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or origin != (f"{parts.scheme}://{parts.netloc}")
            ):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return value

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsSettings:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("allow_credentials needs explicit origins: browsers refuse '*'")
        return self


class DriftSettings(BaseModel):
    """Input drift (drift.py): count served rows into the manifests' reference bins."""

    # On: bench/DRIFT.md measured the counting's cost on the hot path. Models without a
    # reference in their manifest are never counted either way.
    enabled: bool = True


class StatsSettings(BaseModel):
    """Where ``/stats`` reads the whole fleet's numbers (fleetstats.py)."""

    # http(s)://host:port of the Prometheus that scrapes every replica; empty: /stats
    # summarises this replica alone (a bare `modelgate serve` is its own fleet).
    prometheus_url: str = ""
    timeout_seconds: float = Field(2, gt=0, le=30)

    @field_validator("prometheus_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ValueError(f"{value!r} is not a URL like http://prometheus:9090")
        return value.rstrip("/")


TraceSampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]


class TracingSettings(BaseSettings):
    """OpenTelemetry tracing (tracing.py), from the standard ``OTEL_*`` variables, so that
    whatever an operator already sets for other services works here. Off unless
    ``OTEL_TRACES_EXPORTER=otlp``, or an OTLP endpoint is set and the exporter is not
    ``none``; ``OTEL_SDK_DISABLED=true`` turns it off whatever else is set. The exporter's
    transport details (``OTEL_EXPORTER_OTLP_HEADERS``, ``…_TIMEOUT``, ``…_COMPRESSION``,
    ``…_CERTIFICATE``), the span processor's (``OTEL_BSP_*``) and
    ``OTEL_RESOURCE_ATTRIBUTES`` are read by the OTel SDK itself, as the spec says. Not a
    group of ``Settings``: its variables are the standard names, not ``MODELGATE_*``
    ones, so ``create_app`` builds it beside ``Settings``."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    sdk_disabled: bool = False
    # Unset: on when an endpoint is set. The spec's default is "otlp" (always on); ours is
    # off, as tracing costs a little on every request and needs somewhere to send spans.
    traces_exporter: Literal["", "otlp", "none"] = ""
    exporter_otlp_endpoint: str = ""  # the collector's base URL; /v1/traces is appended
    exporter_otlp_traces_endpoint: str = ""  # the full URL, used as is
    # Only OTLP over HTTP with protobuf bodies: no gRPC stack in the image.
    exporter_otlp_protocol: Literal["http/protobuf"] = "http/protobuf"
    exporter_otlp_traces_protocol: Literal["", "http/protobuf"] = ""
    # A request that comes with a sampled traceparent is traced; one without is traced
    # with probability traces_sampler_arg (1 %: enough traces to find slow requests by,
    # at ~1 % of requests paying for spans; bench/TRACING.md).
    traces_sampler: TraceSampler = "parentbased_traceidratio"
    traces_sampler_arg: float = Field(0.01, ge=0, le=1)
    service_name: str = "modelgate"

    @field_validator("exporter_otlp_endpoint", "exporter_otlp_traces_endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ValueError(f"{value!r} is not a URL like http://collector:4318")
        return value

    @property
    def enabled(self) -> bool:
        if self.sdk_disabled or self.traces_exporter == "none":
            return False
        return self.traces_exporter == "otlp" or bool(
            self.exporter_otlp_endpoint or self.exporter_otlp_traces_endpoint
        )

    @property
    def traces_endpoint(self) -> str:
        """Where spans are POSTed, by the spec's rules for OTLP/HTTP."""
        if self.exporter_otlp_traces_endpoint:
            return self.exporter_otlp_traces_endpoint
        base = self.exporter_otlp_endpoint or "http://localhost:4318"
        return base.rstrip("/") + "/v1/traces"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELGATE_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    model_repository: Path = Path("models")
    # Which models to serve; empty means every model found in the repository.
    models: list[str] = Field(default_factory=list)
    # The model behind /predict; empty means the first served model by name.
    default_model: str = ""
    # Pin a model to a version instead of the highest, e.g. '{"churn": "1"}'.
    pinned_versions: dict[str, str] = Field(default_factory=dict)

    # torch intra-op threads per worker; 1 so that W workers on W cores don't oversubscribe.
    torch_threads: int = Field(1, ge=1)
    max_batch_instances: int = Field(1000, ge=1, description="rows in one batch request")
    # A replica's own guard; the gateway enforces its own, smaller-or-equal, limit first.
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)

    redis_url: str = ""
    # A file whose content is the Redis password (compose's secret, the native stack's
    # 0600 file): read once here, so it is never on a command line, in the environment
    # or in a log line. Applied to every Redis connection through redis_connection_url.
    redis_password_file: Path | None = None
    _redis_password: SecretStr | None = PrivateAttr(default=None)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    prediction_log: PredictionLogSettings = Field(default_factory=PredictionLogSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    ranking: RankingSettings = Field(default_factory=RankingSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    stats: StatsSettings = Field(default_factory=StatsSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)

    log_level: str = "INFO"
    # Name reported by GET /, /health and /models; defaults to the host name, which compose
    # sets per replica (api-1, api-2, …) so that answers tell which replica served them.
    instance: str = Field(default_factory=socket.gethostname)

    @model_validator(mode="after")
    def _read_redis_password(self) -> Settings:
        if self.redis_password_file is not None:
            try:
                text = self.redis_password_file.read_text().strip()
            except OSError as exc:
                raise ValueError(
                    f"redis_password_file {self.redis_password_file}: {exc.strerror}"
                ) from None
            if not text:
                raise ValueError(f"redis_password_file {self.redis_password_file} is empty")
            self._redis_password = SecretStr(text)
        return self

    @property
    def redis_connection_url(self) -> str:
        """``redis_url`` with the password from ``redis_password_file`` in it, for the
        clients only (never logged; ``redis_url`` itself stays as configured)."""
        password = self._redis_password
        parts = urlsplit(self.redis_url)
        if password is None or not self.redis_url or parts.password is not None:
            return self.redis_url
        netloc = f"{parts.username or ''}:{quote(password.get_secret_value(), safe='')}@"
        return urlunsplit(parts._replace(netloc=netloc + parts.netloc.rsplit("@", 1)[-1]))


class ProcessSettings(BaseSettings):
    """A replica's gunicorn process: read by ``services/api/gunicorn.conf.py`` (for
    containers, whose command is fixed; ``modelgate serve``'s flags override ``bind`` and
    ``workers``). Same prefix as ``Settings``, which ignores these names and vice versa."""

    model_config = SettingsConfigDict(env_prefix="MODELGATE_", extra="ignore")

    bind: str = "0.0.0.0:8000"
    workers: int = Field(2, ge=1)
    # X-Forwarded-For / -Proto are believed only from these addresses (the gateway), so a
    # client can't choose the IP that quotas are keyed on.
    trusted_proxies: str = "127.0.0.1"
    # Recycle a worker after this many requests (plus up to the jitter); 0: never.
    max_requests: int = Field(0, ge=0)
    max_requests_jitter: int = Field(0, ge=0)
    # The replica's multiprocess-metrics directory; empty: a private temporary one.
    metrics_dir: Path | None = None

    @field_validator("metrics_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value
