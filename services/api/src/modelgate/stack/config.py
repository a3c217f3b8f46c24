"""The native stack's ports and paths, read once from ``MODELGATE_STACK_*`` variables.

Each default is written once, here; the README's table of the native stack's processes is
held to this class by ``tests/unit/test_config_docs.py``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modelgate.settings import TracingSettings
from modelgate.stack.infra import trace_sample_percent


def checkout_root() -> Path:
    """The repository checkout this package runs from (infra/ lives there)."""
    return Path(__file__).resolve().parents[5]


def workers_per_replica(replicas: int) -> int:
    """The cores this process may use, shared among the replicas, at least one each.
    Inference is CPU-bound: more workers than cores only adds switching (measured on
    2 cores: 3 replicas x 1 worker serve ~15 % more than 3 x 2)."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, replicas))


class StackConfig(BaseSettings):
    """Ports and paths of one native stack; ``MODELGATE_STACK_<FIELD>`` overrides each."""

    model_config = SettingsConfigDict(env_prefix="MODELGATE_STACK_", extra="ignore")

    dir: Path = Field(default_factory=lambda: checkout_root() / ".stack")
    infra: Path = Field(default_factory=lambda: checkout_root() / "infra")
    # The replicas' variable, so `make run` and `modelgate serve` agree on it.
    model_repository: Path = Field(
        default_factory=lambda: checkout_root() / "models",
        validation_alias=AliasChoices("model_repository", "MODELGATE_MODEL_REPOSITORY"),
    )
    gateway_port: int = 8080
    gateway_status_port: int = 8089
    # "8001,8002,8003" in the environment: one replica per port.
    replica_ports: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [8001, 8002, 8003], min_length=1
    )
    redis_port: int = 6390
    prometheus_port: int = 9090
    nginx_exporter_port: int = 9113
    redis_exporter_port: int = 9121
    # nginx sends one line per answer over UDP (syslog) to gateway_log_port; the
    # gateway exporter (observability/gatewaylog.py) serves the counts on the other.
    gateway_log_port: int = 5140
    gateway_log_exporter_port: int = 3903
    alertmanager_port: int = 9093
    # Where Alertmanager sends alerts (a webhook); empty: nowhere (its API still has them).
    alert_webhook_url: str = ""
    # Empty: as infra/ says. Set (e.g. "1s", "0s") to see alerts within seconds in tests.
    scrape_interval: str = ""
    alert_for: str = ""
    alert_group_wait: str = ""
    # Unset: the cores this process may use, shared among the replicas.
    workers: int = Field(
        default_factory=lambda data: workers_per_replica(len(data["replica_ports"])), ge=1
    )
    # The gateway's coarse per-IP flood guard (compose sets the same defaults). A load
    # test from one address past ~10k req/s needs it raised, or nginx answers 429.
    gateway_req_per_ip: int = Field(10000, ge=1)
    gateway_req_burst: int = Field(20000, ge=0)
    # The share of gateway-started traces marked sampled. Unset: the replicas' own ratio
    # (OTEL_TRACES_SAMPLER_ARG, which they inherit), so one knob sets both.
    gateway_trace_sample_percent: float = Field(
        default_factory=lambda: trace_sample_percent(TracingSettings().traces_sampler_arg),
        ge=0.01,
        le=100,
    )

    @field_validator("replica_ports", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [int(p) for p in value.split(",") if p.strip()]
        return value

    @field_validator("dir", "infra", "model_repository")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()

    @classmethod
    def from_env(cls, args: argparse.Namespace | None = None) -> StackConfig:
        """The environment's stack; ``--model-repository`` wins over the variable."""
        repository = getattr(args, "model_repository", None)
        return cls(model_repository=repository) if repository else cls()

    @property
    def host(self) -> str:
        """Every process of the native stack listens on loopback only (not a setting)."""
        return "127.0.0.1"

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    @property
    def gateway_url(self) -> str:
        return self.url(self.gateway_port)

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"

    def all_ports(self) -> list[int]:
        return [
            self.redis_port,
            *self.replica_ports,
            self.gateway_port,
            self.gateway_status_port,
            self.prometheus_port,
            self.nginx_exporter_port,
            self.redis_exporter_port,
            self.gateway_log_port,
            self.gateway_log_exporter_port,
            self.alertmanager_port,
        ]
