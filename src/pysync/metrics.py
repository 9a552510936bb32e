"""Prometheus metrics of one engine (``prometheus-client``), served at ``/metrics``.

Each engine has its own registry (several engines can live in one process: tests,
an app with two databases). Counters and histograms are updated where things happen;
gauges are read from the engine when scraped, so they cost nothing in between.

Beside pysync's own names, the registry carries Electric's names for what both have
(``electric_plug_serve_shape_requests_count``, ``electric_admission_control_*`` ...) so
an Electric dashboard works unchanged (docs/operations.md has the mapping).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LabelledValues = dict[tuple[str, ...], float]
BYTE_BUCKETS = (1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
"""Electric's buckets of byte distributions (its Prometheus reporter)."""
ADMISSION_KINDS = ("initial", "existing")


class _Gauges(Collector):
    def __init__(self) -> None:
        self.sources: list[tuple[str, str, tuple[str, ...], Callable[[], LabelledValues]]] = []

    def collect(self) -> Iterator[Metric]:
        for name, documentation, labels, read in self.sources:
            family = GaugeMetricFamily(name, documentation, labels=labels)
            for values, value in read().items():
                family.add_metric(list(values), float(value))
            yield family


class ElectricCounter:
    """A counter exposed under Electric's exact name: Electric's Prometheus reporter
    names counters without the ``_total`` suffix prometheus-client would add, and a
    dashboard queries the name as Electric writes it."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *values: str, amount: float = 1.0) -> None:
        self.values[values] = self.values.get(values, 0.0) + amount

    def value(self, *values: str) -> float:
        return self.values.get(values, 0.0)

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.documentation}", f"# TYPE {self.name} counter"]
        for values, value in sorted(self.values.items()):
            # Label values are pysync's own (status codes, true/false, kinds): no escaping.
            pairs = ",".join(f'{k}="{v}"' for k, v in zip(self.labels, values, strict=True))
            lines.append(f"{self.name}{{{pairs}}} {value}")
        return "\n".join(lines) + "\n"


class EngineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.storage_errors = Counter(
            "pysync_storage_errors",
            "Failed writes or syncs of shape storage.",
            registry=self.registry,
        )
        self.snapshot_seconds = Histogram(
            "pysync_snapshot_duration_seconds",
            "Time to publish a table and write a shape's snapshot.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.responses = Counter(
            "pysync_http_responses",
            "Shape API responses by status code.",
            ["status"],
            registry=self.registry,
        )
        self.response_size = Histogram(
            "electric_shape_response_size_bytes",
            "Body bytes of each shape response (Electric's name).",
            ["is_live"],
            buckets=BYTE_BUCKETS,
            registry=self.registry,
        )
        self._sizes = {live: self.response_size.labels(live) for live in ("true", "false")}
        self.shape_requests = ElectricCounter(
            "electric_plug_serve_shape_requests_count",
            "Shape requests served, by status, known error, live and empty (Electric's name).",
            ("status", "known_error", "live", "empty"),
        )
        self.admission_rejects = ElectricCounter(
            "electric_admission_control_reject_count",
            "Shape requests refused by admission control (503), by kind (Electric's name).",
            ("kind",),
        )
        self._gauges = _Gauges()
        self.registry.register(self._gauges)
        self.before_scrape: list[Callable[[], Awaitable[None]]] = []
        """Refreshes of gauges that need I/O (the slot's retained WAL), awaited by
        ``scrape`` so that reading a gauge itself never blocks."""

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value ``read()`` gives at scrape time."""
        self.labelled_gauge(name, documentation, (), lambda: {(): read()})

    def labelled_gauge(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...],
        read: Callable[[], LabelledValues],
    ) -> None:
        """A gauge with labels: ``read()`` gives ``{label values: value}`` at scrape time.
        A name given again replaces the earlier source (a second ShapeAPI on the engine):
        a family twice on one page is refused by Prometheus."""
        sources = self._gauges.sources
        sources[:] = [source for source in sources if source[0] != name]
        sources.append((name, documentation, labels, read))

    def shape_response(
        self, status: int, known_error: bool, live: bool, empty: bool, size: int
    ) -> None:
        """One response of the shape route, as Electric's ``serve_shape`` event counts it
        (``empty``: a live request answered with no change)."""
        live_label = "true" if live else "false"
        self.shape_requests.inc(
            str(status),
            "true" if known_error else "false",
            live_label,
            "true" if empty else "false",
        )
        self._sizes[live_label].observe(size)

    async def scrape(self) -> bytes:
        for refresh in self.before_scrape:
            await refresh()
        return self.render()

    def render(self) -> bytes:
        own = "".join(c.render() for c in (self.shape_requests, self.admission_rejects))
        return generate_latest(self.registry) + own.encode()
