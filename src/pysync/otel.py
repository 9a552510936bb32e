"""The OpenTelemetry side of ``pysync.tracing`` (``pysync[otel]``): imported only when
tracing is configured, so a pysync without it never loads ``opentelemetry``.

As Electric: OTLP over HTTP with protobuf bodies (gzip) to ``<endpoint>/v1/traces``,
spans batched; with debug, each span is also printed to stdout as it ends. The resource
names the service (``service.name``, default ``pysync``), its version and this process
(``service.instance.id``, default a random UUID). The tracer provider is pysync's own,
never the process' global one: an app embedding pysync keeps its own tracing setup.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pysync._version import __version__
from pysync.config import Settings
from pysync.tracing import Attributes, Span, Tracer

TRACES_PATH = "/v1/traces"
FLUSH_MS = 3_000
"""At shutdown, how long pending spans may take to be exported."""
STATUS_CODE = "http.response.status_code"
_PROPAGATED = (b"traceparent", b"tracestate")


def traces_url(endpoint: str) -> str:
    """Electric's ``ELECTRIC_OTLP_ENDPOINT`` is the collector's base URL; the traces go to
    its ``/v1/traces`` (a URL that already ends so is taken as it is)."""
    base = endpoint.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


class OtelTracer(Tracer):
    enabled = True

    def __init__(self, provider: TracerProvider, exporter: SpanExporter | None = None) -> None:
        """``exporter``: the one behind ``provider``'s batch processor (stopped when it
        holds up ``shutdown``)."""
        self.provider = provider
        self._exporter = exporter
        self._tracer = provider.get_tracer("pysync", __version__)
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_settings(cls, settings: Settings) -> OtelTracer:
        resource = Resource.create(
            {
                "service.name": settings.service_name,
                "service.version": __version__,
                "service.instance.id": settings.instance_id or str(uuid.uuid4()),
            }
        )
        provider = TracerProvider(resource=resource)
        exporter: SpanExporter | None = None
        if settings.otlp_endpoint is not None:
            # Imported here: with only debug printing the exporter is not needed.
            from opentelemetry.exporter.otlp.proto.http import Compression
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(
                endpoint=traces_url(settings.otlp_endpoint), compression=Compression.Gzip
            )
            provider.add_span_processor(BatchSpanProcessor(exporter))
        if settings.otel_debug:
            # sys.stdout now (the exporter's default is the one at its import).
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout)))
        return cls(provider, exporter)

    @contextlib.contextmanager
    def span(self, name: str, attributes: Attributes) -> Iterator[Span]:
        with self._tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span

    @contextlib.contextmanager
    def server_span(
        self, name: str, headers: Sequence[tuple[bytes, bytes]], attributes: Attributes
    ) -> Iterator[Span]:
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in headers
            if key in _PROPAGATED
        }
        parent = self._propagator.extract(carrier) if carrier else None
        with self._tracer.start_as_current_span(
            name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
        ) as span:
            yield span
            # A server's 5xx is its error (a 4xx is the client's): OpenTelemetry's rule.
            status = getattr(span, "attributes", {}).get(STATUS_CODE)
            if isinstance(status, int) and status >= 500:
                span.set_status(trace.StatusCode.ERROR)

    def shutdown(self) -> None:
        # Bounded: with the collector down, the exporter retries for up to 10 s (the
        # SDK's shutdown waits for it), which would hold up the stop of pysync; what is
        # not exported by then is given up.
        closing = threading.Thread(target=self.provider.shutdown, name="pysync-otel-shutdown")
        closing.start()
        closing.join(FLUSH_MS / 1000)
        if closing.is_alive() and self._exporter is not None:
            self._exporter.shutdown()  # ends the retries under way
            closing.join(FLUSH_MS / 1000)
