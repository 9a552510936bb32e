"""OpenTelemetry traces, optional: the engine and the shape API make spans through a
``Tracer``, which by default (nothing configured) does nothing and imports nothing.

Configured (``--otlp-endpoint`` / ``ELECTRIC_OTLP_ENDPOINT``, or ``--otel-debug`` /
``ELECTRIC_OTEL_DEBUG``) and with ``pysync[otel]`` installed, ``from_settings`` returns
``pysync.otel.OtelTracer``: spans are exported over OTLP/HTTP (protobuf) to
``<endpoint>/v1/traces``, as Electric does, and with debug also printed to stdout.

The callers check ``enabled`` once, when they are built or start, not per change: with
tracing off the hot paths run exactly as without this module.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pysync.config import Settings

log = logging.getLogger(__name__)

AttributeValue = str | bool | int | float
Attributes = Mapping[str, AttributeValue]

INSTALL_HINT = "pip install 'pysync[otel]'"


class Span(Protocol):
    """What pysync does with a span (an OpenTelemetry ``Span`` is one)."""

    def set_attributes(self, attributes: Attributes) -> None: ...

    def is_recording(self) -> bool:
        """False for a span the sampler left out: its attributes go nowhere."""
        ...


class _NoSpan:
    def set_attributes(self, attributes: Attributes) -> None:
        pass

    def is_recording(self) -> bool:
        return False


NO_SPAN = _NoSpan()


class Tracer:
    """No tracing: every span is a no-op (the default everywhere)."""

    enabled = False

    @contextlib.contextmanager
    def span(self, name: str, attributes: Attributes) -> Iterator[Span]:
        """A span, child of the current one (if any) for the duration of the block."""
        yield NO_SPAN

    @contextlib.contextmanager
    def server_span(
        self, name: str, headers: Sequence[tuple[bytes, bytes]], attributes: Attributes
    ) -> Iterator[Span]:
        """The span of an HTTP request: a child of the caller's span when ``headers``
        carry a W3C ``traceparent``, else a new trace."""
        yield NO_SPAN

    def shutdown(self) -> None:
        """Export what is pending (at the end of the process)."""


NO_TRACER = Tracer()


def from_settings(settings: Settings) -> Tracer:
    """The tracer ``settings`` ask for: ``NO_TRACER`` when tracing is not configured,
    or when ``opentelemetry`` is not installed (then a warning says how to install it)."""
    if settings.otlp_endpoint is None and not settings.otel_debug:
        return NO_TRACER
    try:
        from pysync.otel import OtelTracer
    except ImportError as exc:
        log.warning(
            "tracing is configured (--otlp-endpoint / ELECTRIC_OTLP_ENDPOINT or "
            "--otel-debug / ELECTRIC_OTEL_DEBUG) but OpenTelemetry is not installed "
            "(%s): no traces are exported; install it with %s",
            exc.name or exc,
            INSTALL_HINT,
        )
        return NO_TRACER
    return OtelTracer.from_settings(settings)
