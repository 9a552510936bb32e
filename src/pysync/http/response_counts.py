"""What each response of the shape API counts in ``/metrics``, the same for the ASGI app
and the live path (``parking.py``): ``pysync_http_responses_total`` by status, and for
``/v1/shape`` Electric's per-request event (status, known error, live, empty, size)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter

from pysync.http.errors import KNOWN_ERROR, NO_CHANGE
from pysync.metrics import EngineMetrics


class ResponseCounts:
    def __init__(self, metrics: EngineMetrics) -> None:
        self._metrics = metrics
        self._by_status: dict[int, Counter] = {}
        """The counter of each status seen (``labels`` costs a lookup and a lock)."""

    def status(self, status: int) -> None:
        """A response of any route started."""
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self._metrics.responses.labels(str(status))
        counter.inc()

    def shape_response(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], live: bool, size: int
    ) -> None:
        """A response of ``/v1/shape`` ended, with ``headers`` (raw) and ``size`` bytes of
        body. Electric's ``empty``: a live request answered without changes."""
        known_error = KNOWN_ERROR in headers
        empty = live and NO_CHANGE in headers
        self._metrics.shape_response(status, known_error, live, empty, size)
