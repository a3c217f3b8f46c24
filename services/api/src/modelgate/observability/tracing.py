"""OpenTelemetry tracing: one trace per sampled prediction, from the gateway's (or the
client's) W3C ``traceparent`` through the queue and the batch to the tensor call.

Off by default; on with the standard ``OTEL_*`` variables (``TracingSettings``). Each
worker builds its own ``Tracing`` in the lifespan, after gunicorn forked it: the batch
span processor's export thread must start in the process that uses it. It is not made
the OTel API's global provider: tests build several apps in one process, and nothing
here needs a global but the API's own context (the current span, a context variable).

Spans, for a sampled request::

    POST /models/{name}/predict      server span, parent: the incoming traceparent
    ├── quota lookup                 (quotas on)
    ├── cache lookup                 (cache on)
    ├── queue wait                   from the enqueue to the start of its batch
    └── batch                        one per tensor call: its parent is the first sampled
        └── tensor call              request it carried, and it links to each of them

A batch carries several requests, each in a trace of its own; a span has one parent, so
the batch hangs under the first sampled request and links to every sampled one (Jaeger
shows the links as references); an unsampled request has no span to link to.

The cost when off is a ``None`` check at each hook. When on, every request pays for a
look at its ``traceparent`` and the sampling decision (``Sampling``), made before any
span exists; only a sampled one (1 % by default) gets spans at all, and the batch
processor exports them from its own thread. The trace id goes into the access line and
the prediction log only for a sampled request: an id that leads to no trace would only
mislead.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status
from opentelemetry.trace import StatusCode as OtelStatus
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.responses import Response
from starlette.types import Scope

from modelgate import __version__
from modelgate.settings import TracingSettings

_TRACE_ID = "modelgate.trace_id"
_CARRIED = (b"traceparent", b"tracestate")
_LOW_64 = (1 << 64) - 1
# A version-00 traceparent whose sampled flag is clear: with a parent-based sampler, a
# request that carries one is not traced, decided without parsing it further (the
# gateway sends one with nearly every request).
_UNSAMPLED = re.compile(rb"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f][02468ace]")
# Attribute names: OTel's semantic conventions where one exists, else ours.
MODEL = "modelgate.model.name"
VERSION = "modelgate.model.version"
ROWS = "modelgate.rows"
CACHED_ROWS = "modelgate.rows.cached"
BATCH_ROWS = "modelgate.batch.rows"
BATCH_REQUESTS = "modelgate.batch.requests"
INLINE = "modelgate.tensor.inline"


@dataclass(frozen=True, slots=True)
class Sampling:
    """The sampler ``OTEL_TRACES_SAMPLER`` names (with ``OTEL_TRACES_SAMPLER_ARG``), applied
    before any span exists: an unsampled request then costs a header scan and a random
    number, where the SDK's own samplers run only inside ``start_span``, after ids and a
    context were built (~15 µs a request on the bench machine, loaded). The decisions are
    the SDK's: a parent-based sampler follows the incoming sampled flag; a ratio samples a
    trace whose id's low 64 bits fall below ``ratio × 2^64`` (``TraceIdRatioBased``), for a
    trace started here a random draw with the same odds."""

    parent_based: bool
    bound: int  # 0: never; 2**64: always

    @classmethod
    def from_settings(cls, settings: TracingSettings) -> Sampling:
        name = settings.traces_sampler
        ratio = {"always_on": 1.0, "always_off": 0.0}.get(
            name.removeprefix("parentbased_"), settings.traces_sampler_arg
        )
        return cls(name.startswith("parentbased_"), TraceIdRatioBased.get_bound_for_rate(ratio))

    def root(self) -> bool:
        """Whether a trace started here is sampled."""
        return random.getrandbits(64) < self.bound

    def child(self, parent: SpanContext) -> bool:
        """Whether a request that came with ``parent`` (a valid context) is sampled."""
        if self.parent_based:
            return parent.trace_flags.sampled
        return parent.trace_id & _LOW_64 < self.bound


def trace_id(scope: Scope) -> str | None:
    """The request's trace id (32 hex) if it was sampled; for the access line."""
    return scope.get(_TRACE_ID)


def recorded_trace_id() -> str | None:
    """The current span's trace id if it is being recorded (sampled), else None."""
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    return format(span.get_span_context().trace_id, "032x")


@dataclass(frozen=True, slots=True)
class Carried:
    """A sampled request's place in a batch, for the batch's spans: its span's context,
    its rows and how long it waited in the queue."""

    context: SpanContext
    rows: int
    waited_s: float


class Tracing:
    """A worker's tracer provider and the spans modelgate makes with it."""

    def __init__(self, settings: TracingSettings, instance: str) -> None:
        resource = Resource.create(
            {
                "service.name": settings.service_name,
                "service.version": __version__,
                "service.instance.id": instance,
            }
        )
        self.sampling = Sampling.from_settings(settings)
        # Sampling decides before a span is started (``request``); whatever starts one
        # here is to be recorded: the request's own span and its children.
        self.provider = TracerProvider(sampler=ALWAYS_ON, resource=resource)
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.traces_endpoint))
        )
        self.tracer = self.provider.get_tracer("modelgate", __version__)
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_settings(cls, settings: TracingSettings, instance: str) -> Tracing | None:
        return cls(settings, instance) if settings.enabled else None

    async def request(self, scope: Scope, route: str, call: Awaitable[Response]) -> Response:
        """Run ``call`` (the prediction handler) in the request's server span, if the
        request is sampled: a child of the ``traceparent`` it came with, or a new trace.
        An unsampled request runs without any span."""
        carrier = {}
        for name, value in scope["headers"]:
            if name in _CARRIED:
                parent_based = self.sampling.parent_based
                if parent_based and name == b"traceparent" and _UNSAMPLED.fullmatch(value):
                    return await call
                carrier[name.decode()] = value.decode("latin-1")
        parent = self._propagator.extract(carrier) if carrier else None
        parent_span = trace.get_current_span(parent).get_span_context()
        if parent_span.is_valid:
            sampled = self.sampling.child(parent_span)
        else:
            parent, sampled = None, self.sampling.root()
        if not sampled:
            return await call
        span = self.tracer.start_span(
            f"{scope['method']} {route}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "http.route": route},
        )
        scope[_TRACE_ID] = format(span.get_span_context().trace_id, "032x")
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            response = await call
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(OtelStatus.ERROR, type(exc).__name__))
            raise
        else:
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:  # a server span's 4xx is the client's error
                span.set_status(Status(OtelStatus.ERROR))
            return response
        finally:
            otel_context.detach(token)
            span.end()

    @contextlib.contextmanager
    def step(self, name: str, attributes: dict[str, Any] | None = None) -> Iterator[Span | None]:
        """A child span of the current one for a step of a sampled request (None, and no
        span, for the others)."""
        if not trace.get_current_span().is_recording():
            yield None
            return
        span = self.tracer.start_span(name, attributes=attributes)
        try:
            yield span
        finally:
            span.end()

    @staticmethod
    def current() -> SpanContext | None:
        """The current span's context if it is sampled: a batch links to the requests it
        carries, and hangs under the first."""
        span = trace.get_current_span()
        return span.get_span_context() if span.is_recording() else None

    @staticmethod
    def note_prediction(model: str, version: str, rows: int, cached_rows: int) -> str | None:
        """The prediction's facts on the request's span; its trace id if sampled."""
        span = trace.get_current_span()
        if not span.is_recording():
            return None
        span.set_attributes({MODEL: model, VERSION: version, ROWS: rows, CACHED_ROWS: cached_rows})
        return format(span.get_span_context().trace_id, "032x")

    def batch(
        self,
        carried: list[Carried],
        attributes: dict[str, Any],
        requests: int,
        rows: int,
        batch_s: float,
        tensor_s: float,
        inline: bool,
    ) -> None:
        """The spans of one batch that has just finished (``requests`` requests, ``rows``
        rows), if it carried a sampled request: each sampled request's queue wait, the
        batch, and its tensor call. Made afterwards,
        from the batcher's own clock readings, so the batch itself pays nothing for them.
        The tensor call is placed at the end of the batch (its duration is measured in the
        thread that ran it; the hop back to the event loop follows it)."""
        if not carried:
            return
        end_ns = time.time_ns()
        begun_ns = end_ns - int(batch_s * 1e9)
        for c in carried:
            self.tracer.start_span(
                "queue wait",
                context=trace.set_span_in_context(NonRecordingSpan(c.context)),
                start_time=begun_ns - int(c.waited_s * 1e9),
                attributes={ROWS: c.rows},
            ).end(end_time=begun_ns)
        batch = self.tracer.start_span(
            "batch",
            context=trace.set_span_in_context(NonRecordingSpan(carried[0].context)),
            links=[Link(c.context, {ROWS: c.rows}) for c in carried],
            start_time=begun_ns,
            attributes={**attributes, BATCH_ROWS: rows, BATCH_REQUESTS: requests},
        )
        self.tracer.start_span(
            "tensor call",
            context=trace.set_span_in_context(batch),
            start_time=end_ns - int(tensor_s * 1e9),
            attributes={**attributes, BATCH_ROWS: rows, INLINE: inline},
        ).end(end_time=end_ns)
        batch.end(end_time=end_ns)

    def shutdown(self) -> None:
        """Export what is left and stop the export thread (blocking: call it off the loop)."""
        self.provider.shutdown()
