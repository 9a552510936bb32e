"""Admission control, as Electric's: how many shape requests are served at once, by kind.

One count for both paths a request can take: the ASGI app holds a place for the whole
request (``ShapeAPI._serve``), the live path (``parking.LivePolls``) while it answers a
request or keeps it parked. A request refused here is a 503 Electric's clients back off
from; the live path never refuses one itself, it hands it to the app, which does (so a
refusal is counted once).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from pysync.http.errors import too_many
from pysync.metrics import ADMISSION_KINDS, EngineMetrics
from pysync.shapes.consumer import ShapeConsumer

Kind = Literal["initial", "existing"]


def kind_of(known: ShapeConsumer | None) -> Kind:
    """The kind of a request whose shape is ``known`` (``ShapeSource.known``).

    As Electric (1.5.2): a request is initial when its shape does not exist yet, whatever
    its offset: clients coming back to a shape (offset=-1 after a refetch or a reload) do
    not compete with the snapshots of new shapes, and requests for shapes that went away
    (a restart) do not bypass that budget."""
    return "initial" if known is None else "existing"


class Admission:
    """The places of each kind, and how many are taken (``in_flight``)."""

    def __init__(self, metrics: EngineMetrics, *, initial: int, existing: int) -> None:
        self.limits: dict[str, int] = {"initial": initial, "existing": existing}
        self.in_flight: dict[str, int] = {"initial": 0, "existing": 0}
        self._rejects = metrics.admission_rejects
        metrics.labelled_gauge(
            "electric_admission_control_acquire_current",
            "Shape requests being served, by kind (Electric's name).",
            ("kind",),
            lambda: {(kind,): self.in_flight[kind] for kind in ADMISSION_KINDS},
        )
        for name in ("acquire_limit", "reject_limit"):
            metrics.labelled_gauge(
                f"electric_admission_control_{name}",
                "Concurrent shape requests allowed, by kind (Electric's name).",
                ("kind",),
                lambda: {(kind,): self.limits[kind] for kind in ADMISSION_KINDS},
            )
        for kind in ADMISSION_KINDS:
            self._rejects.inc(kind, amount=0)  # 0 until one: dashboards see it

    def try_enter(self, kind: Kind) -> bool:
        """Take a place if one is free."""
        if self.in_flight[kind] >= self.limits[kind]:
            return False
        self.in_flight[kind] += 1
        return True

    def enter(self, kind: Kind) -> None:
        """Take a place, or raise Electric's 503 (and count the refusal)."""
        if not self.try_enter(kind):
            self._rejects.inc(kind)
            raise too_many(kind, self.limits[kind])

    def leave(self, kind: Kind) -> None:
        self.in_flight[kind] -= 1

    @contextmanager
    def admitted(self, kind: Kind) -> Iterator[None]:
        """A place for the duration of the block."""
        self.enter(kind)
        try:
            yield
        finally:
            self.leave(kind)

    def busy(self) -> bool:
        """Some request holds a place."""
        return any(self.in_flight.values())
