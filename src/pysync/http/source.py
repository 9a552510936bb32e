"""What the HTTP layer needs of the engine that serves its shapes.

``Engine`` is one; an HTTP worker of ``pysync serve --workers`` has another
(``serve.mirror.MirrorEngine``: the shapes of the replicating process, read from its
logs). The shape API works the same on both.

``EngineUnavailable`` is the seam's error (a shape cannot be had now: 503 with
``retry-after``); the HTTP layer takes it from here, not from the engine.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import Protocol, TypeVar

import msgspec

from pysync.engine import EngineUnavailable
from pysync.log.storage import StorageError
from pysync.metrics import EngineMetrics
from pysync.postgres.connections import Connections
from pysync.shapes.consumer import ShapeConsumer
from pysync.shapes.definition import ShapeDefinition

__all__ = ["EngineUnavailable", "ShapeSource", "SubsetReply"]

T = TypeVar("T")


class SubsetReply(msgspec.Struct):
    """A subset snapshot's response body and headers."""

    body: bytes
    headers: dict[str, str]


class ShapeSource(Protocol):
    # Read-only (properties), so that an engine may narrow the types.
    @property
    def metrics(self) -> EngineMetrics: ...

    @property
    def status(self) -> enum.Enum:
        """Its ``value`` is what /v1/health reports: active, starting, degraded."""

    @property
    def problem(self) -> str | None: ...

    @property
    def warnings(self) -> list[str]:
        """What /v1/health reports besides the status (a table lost its replica identity)."""

    @property
    def storage_error(self) -> StorageError | None: ...

    @property
    def started(self) -> asyncio.Event: ...

    @property
    def connections(self) -> Connections:
        """Sessions for subset queries."""

    @property
    def last_seen_lsn(self) -> int: ...

    async def shape(self, definition: ShapeDefinition, *, verify: bool = False) -> ShapeConsumer:
        """Get or create; raises ShapeError, EngineUnavailable, psycopg.OperationalError.
        ``verify``: a known shape is checked against the catalog first (a table dropped
        and created again makes a new shape)."""

    async def find(self, definition: ShapeDefinition) -> ShapeConsumer | None: ...

    def known(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        """Without an await: None when it would take one."""

    def get(self, handle: str) -> ShapeConsumer | None: ...

    async def delete(self, handle: str) -> bool:
        """False if there was no such shape. Returns once no request can get the shape
        any more (with HTTP workers: from any of them)."""

    def storage_failure(self) -> asyncio.Future[None]: ...

    async def subset_elsewhere(
        self, consumer: ShapeConsumer, fields: dict[str, object], schema: str
    ) -> SubsetReply | None:
        """The subset of ``consumer`` answered by another process, or None: answer it
        here. (An HTTP worker has no values of a shape's subqueries, which a subset's
        rows and tags are computed from.) Raises ShapeAPIError, ShapeGone."""

    async def compute(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` off the event loop within the compile budget (TimeoutError):
        parsing a large client clause must not stall other requests."""
