"""Prometheus metrics of one engine (``prometheus-client``), served at ``/metrics``.

Each engine has its own registry (several engines can live in one process: tests,
an app with two databases). Counters and histograms are updated where things happen;
gauges are read from the engine when scraped, so they cost nothing in between.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Gauges(Collector):
    def __init__(self) -> None:
        self.sources: list[tuple[str, str, Callable[[], float]]] = []

    def collect(self) -> Iterator[Metric]:
        for name, documentation, read in self.sources:
            family = GaugeMetricFamily(name, documentation)
            family.add_metric([], float(read()))
            yield family


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
        self._gauges = _Gauges()
        self.registry.register(self._gauges)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value ``read()`` gives at scrape time."""
        self._gauges.sources.append((name, documentation, read))

    def render(self) -> bytes:
        return generate_latest(self.registry)
