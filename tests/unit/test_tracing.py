"""Tracing's settings and sampling decisions, without a server: what turns it on, where
spans go, which requests are sampled; the README's table held to the settings class."""

from __future__ import annotations

import os
import re

import pytest
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import ValidationError

from modelgate.observability.tracing import _UNSAMPLED, Sampling, Tracing
from modelgate.settings import TracingSettings
from modelgate.stack.infra import RenderError, gateway_values, trace_sample_percent
from tests.conftest import ROOT

_CELL = re.compile(r"`([^`]*)`")


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings read the environment: start each test from none of ours."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def readme_rows() -> list[tuple[str, str | None]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Tracing\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `OTEL_"):
            name_cell, default_cell = (c.strip() for c in line.strip("|").split("|")[:2])
            literal = _CELL.fullmatch(default_cell)
            rows.append((_CELL.findall(name_cell)[0], literal.group(1) if literal else None))
    return rows


def test_the_readme_table_is_the_settings_class() -> None:
    rows = readme_rows()
    fields = TracingSettings.model_fields
    assert {name.removeprefix("OTEL_").lower() for name, _ in rows} == set(fields)
    for name, documented in rows:
        default = fields[name.removeprefix("OTEL_").lower()].get_default()
        if documented is None:
            assert default == "", name  # "none"/"unset" in words: the empty default
        elif isinstance(default, bool):
            assert documented == str(default).lower(), name
        elif isinstance(default, float):
            assert float(documented) == default, name
        else:
            assert documented == default, name


def test_off_by_default_and_what_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not TracingSettings().enabled
    assert Tracing.from_settings(TracingSettings(), "api-1") is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    on = TracingSettings()
    assert on.enabled and on.traces_endpoint == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://tempo:4318/otlp/traces")
    assert TracingSettings().traces_endpoint == "https://tempo:4318/otlp/traces"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not TracingSettings().enabled
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    assert TracingSettings().enabled
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not TracingSettings().enabled


def test_an_exporter_alone_sends_to_the_local_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    assert TracingSettings().traces_endpoint == "http://localhost:4318/v1/traces"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ],
)
def test_a_bad_value_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("OTEL_").lower()):
        TracingSettings()


def context(trace_id: int, sampled: bool) -> SpanContext:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return SpanContext(trace_id, 0x1234, is_remote=True, trace_flags=flags)


@pytest.mark.parametrize("ratio", [0.0, 0.01, 0.5, 1.0])
def test_sampling_decides_as_the_sdks_sampler_would(ratio: float) -> None:
    """Parent-based: the caller's flag; a ratio: the trace id's low bits, as
    TraceIdRatioBased (compared with it, on the same ids)."""
    parent_based = Sampling.from_settings(
        TracingSettings(traces_sampler="parentbased_traceidratio", traces_sampler_arg=ratio)
    )
    ratio_only = Sampling.from_settings(
        TracingSettings(traces_sampler="traceidratio", traces_sampler_arg=ratio)
    )
    sdk_ratio = TraceIdRatioBased(ratio)
    sdk_parent = ParentBased(sdk_ratio)
    for i in range(200):
        trace_id = (i * 0x9E3779B97F4A7C15_9E3779B97F4A7C15) % (1 << 128) or 1
        for sampled in (True, False):
            parent = context(trace_id, sampled)
            assert parent_based.child(parent) is sampled
            want = sdk_ratio.should_sample(None, trace_id, "x").decision.is_sampled()
            assert ratio_only.child(parent) is want
            ctx = set_span_in_context(NonRecordingSpan(parent))
            assert sdk_parent.should_sample(ctx, trace_id, "x").decision.is_sampled() is sampled


def test_roots_are_sampled_at_the_ratio() -> None:
    always = Sampling.from_settings(TracingSettings(traces_sampler="always_on"))
    never = Sampling.from_settings(TracingSettings(traces_sampler="parentbased_always_off"))
    assert all(always.root() for _ in range(1000))
    assert not any(never.root() for _ in range(1000))
    half = Sampling.from_settings(TracingSettings(traces_sampler_arg=0.5))
    assert 300 < sum(half.root() for _ in range(1000)) < 700  # 2^-60 to fail by chance


@pytest.mark.parametrize(
    "header",
    [
        "00-" + "ab" * 16 + "-" + "cd" * 8 + "-00",
        "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01",
        "00-" + "ab" * 16 + "-" + "cd" * 8 + "-02",
        "00-" + "ab" * 16 + "-" + "cd" * 8 + "-03",
        "00-" + "0" * 32 + "-" + "cd" * 8 + "-00",
        "00-" + "ab" * 16 + "-" + "0" * 16 + "-00",
        "00-" + "AB" * 16 + "-" + "cd" * 8 + "-00",
        "01-" + "ab" * 16 + "-" + "cd" * 8 + "-00",
        "00-" + "ab" * 16 + "-" + "cd" * 8 + "-00-extra",
        "garbage",
    ],
)
def test_the_unsampled_shortcut_only_skips_what_the_propagator_reads_as_unsampled(
    header: str,
) -> None:
    extracted = get_current_span(
        TraceContextTextMapPropagator().extract({"traceparent": header})
    ).get_span_context()
    if _UNSAMPLED.fullmatch(header.encode()):
        assert extracted.is_valid and not extracted.trace_flags.sampled


def test_the_gateway_sample_share_follows_the_replicas_ratio() -> None:
    assert trace_sample_percent(0.01) == 1
    assert trace_sample_percent(0) == 0.01  # nginx's least; "0%" is refused
    assert trace_sample_percent(1) == 100

    def rendered(**kw: float) -> str:
        values = gateway_values(
            listen="1", status_listen="2", upstreams=["a", "b", "c"], access_log="x", **kw
        )
        return values["GATEWAY_TRACE_SAMPLE_PERCENT"]

    assert rendered() == "1"
    assert rendered(trace_sample_percent=0.25) == "0.25"
    for bad in (0, 100.5, 0.001):
        with pytest.raises(RenderError, match="trace_sample_percent"):
            rendered(trace_sample_percent=bad)
