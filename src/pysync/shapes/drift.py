"""Schema drift that no WAL reports: a table dropped (or dropped and created again under
its name), renamed or altered while none of its changes are replicated.

Postgres takes a dropped table out of the publication and sends nothing about it, and
an altered table sends its Relation message only with its next replicated change. Until
then the shapes on it (or on a subquery reading it) would serve the old table's rows
with nothing but up-to-date. So, as Electric's schema reconciler, the tables of every
shape are compared with the catalog every ``interval`` seconds (one query, by oid, for
all of them) and at once when a request finds a table changed; a shape whose table went
or changed in a way it depends on is invalidated: its clients get a 409 and refetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, TypeVar

import psycopg

from pysync.postgres.catalog import Table, load_tables_by_oid_async

if TYPE_CHECKING:
    from pysync.shapes.registry import ShapeRegistry

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_CHECK_INTERVAL = 15.0
"""Seconds between two checks (Electric's reconciler: 60)."""
SLICE = 2_000
"""Shapes looked at between two turns of the event loop (a few ms)."""


def drift(table: Table, now: Table | None, reads: set[str], every_column: bool) -> str | None:
    """Why a shape (or subquery) built on ``table`` cannot go on with the table as it is
    ``now`` (None: gone), or None if it can. ``reads``: the columns it depends on;
    ``every_column``: it selects all of them (a column added or dropped changes it)."""
    if now is None:
        return "table dropped"
    if (now.schema, now.name) != (table.schema, table.name):
        return "table renamed"
    if now.identity != table.identity:
        return "primary key changed"  # its rows' keys
    types = {c.name: c.type_oid for c in now.columns}
    if every_column and types.keys() != {c.name for c in table.columns}:
        return "columns added or dropped"
    if any(types.get(c.name) != c.type_oid for c in table.columns if c.name in reads):
        return "a column it reads was dropped or retyped"
    # ADD VALUE keeps every label (and their order); RENAME VALUE changes the text of
    # values the shape holds and its clause may compare with (an enum constant). And
    # its clause's SQL names the enum type (move-in queries are written again).
    enums = {c.name: (c.enum_type, set(c.enum_labels)) for c in now.columns}
    for c in table.columns:
        if c.name in reads and c.enum_type:
            name, labels = enums[c.name]
            if not labels.issuperset(c.enum_labels):
                return "an enum label of a column it reads was renamed"
            if name != c.enum_type:
                return "the enum type of a column it reads was renamed"
    return None


class SchemaCheck:
    def __init__(self, registry: ShapeRegistry, interval: float = SCHEMA_CHECK_INTERVAL) -> None:
        self.registry = registry
        self.interval = interval
        self._wake = asyncio.Event()

    def soon(self) -> None:
        """Check now rather than at the next interval (a table was found changed)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # the interval is up
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.check()
            except psycopg.Error as exc:
                # The next check tries again; meanwhile the Relation messages still tell.
                log.warning("schema check failed, retried in %g s: %s", self.interval, exc)

    async def check(self) -> None:
        """Invalidate the shapes (and subqueries) whose tables drifted."""
        registry = self.registry
        consumers = list(registry)
        deps = [d for d in registry.subqueries.by_key.values() if not d.gone]
        oids = {d.subquery.table.oid for d in deps}
        async for part in _slices(consumers):
            oids.update(c.shape.table.oid for c in part)
        if not oids:
            return
        # What was collected above was built from the catalog before this query reads
        # it, so a difference is a change, never a query behind a shape.
        partitions = registry.partitions
        before = {oid: set(keys) for oid, keys in partitions.learned.items()}
        async with registry.connections.catalog_session() as conn:
            tables = await load_tables_by_oid_async(conn, oids)
        for dep in deps:
            table = dep.subquery.table
            now = tables.get(table.oid)
            if now is None or not _unchanged(table, now):
                reads = set(table.identity) | set(dep.needed)
                reason = drift(table, now, reads, every_column=False)
                if reason is None and now is not None and table.partitioned:
                    reason = partitions.drift(table, now)
                if reason is not None:
                    registry.subqueries.fail(dep, reason)
        async for part in _slices(consumers):
            for consumer in part:
                shape = consumer.shape
                table = shape.table
                now = tables.get(table.oid)
                if consumer.gone or (now is not None and _unchanged(table, now)):
                    continue
                reason = drift(table, now, shape.reads, shape.definition.selects_all)
                if reason is None and now is not None and table.partitioned:
                    reason = partitions.drift(table, now)
                if reason is not None:
                    registry.invalidate(consumer, reason)
        partitions.settle(before, oids, tables)


async def _slices(items: list[T]) -> AsyncIterator[list[T]]:
    """``items`` in slices, with a turn of the event loop between two: requests and
    ingest go on while 100,000 shapes are looked at."""
    for start in range(0, len(items), SLICE):
        if start:
            await asyncio.sleep(0)
        yield items[start : start + SLICE]


def _unchanged(table: Table, now: Table) -> bool:
    """The common case, cheaply: the same columns under the same name, not partitioned
    (``drift`` decides for the others; the replica identity pysync sets on publishing is
    no change)."""
    return (
        now.columns == table.columns
        and now.name == table.name
        and now.schema == table.schema
        and not now.partitioned  # its partitions: Partitions.drift
    )
