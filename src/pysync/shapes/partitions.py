"""Partitioned tables: a shape on the partitioned table (the root) gets the changes of
every partition, present and future, as rows of the root.

pgoutput reports a partition's change under the partition's own relation (pysync does
not set ``publish_via_partition_root``, as Electric: a shape on one partition keeps
seeing its rows under that partition's name). Once a partitioned table is synced, each
Relation message is looked up in the catalog before the changes that follow it: its
partitioned ancestors go on the Relation (``Relation.ancestors``), and the collector
routes the partition's changes to the ancestors' shapes as well, keyed by the shape's
table. Nothing is looked up per change.

What the WAL does not tell: a partition detached (or dropped) takes its rows out of the
root, and a table attached brings rows the WAL never carried. The schema check
(``drift.py``) compares each root shape's partitions with the catalog and invalidates
the shape then (its clients refetch). A partition made with ``CREATE TABLE ... PARTITION
OF`` starts empty: its rows all come through the WAL, so it is *learned* (the shapes
keep going); a table the transaction that made it a partition did not create was
attached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from pysync.postgres.catalog import Table
from pysync.postgres.connections import Connections
from pysync.postgres.pgoutput import Relation

log = logging.getLogger(__name__)

# A relation's partitioned ancestors, nearest first, and how it became a partition.
_ANCESTORS = """
SELECT n.nspname, c.relname, c.oid,
       (SELECT h.xmin::text::bigint FROM pg_inherits h WHERE h.inhrelid = %(oid)s::oid),
       (SELECT t.xmin::text = h.xmin::text FROM pg_inherits h, pg_class k, pg_type t
        WHERE h.inhrelid = %(oid)s::oid AND k.oid = h.inhrelid AND t.oid = k.reltype)
FROM pg_partition_ancestors(%(oid)s::oid) WITH ORDINALITY AS a(relid, level)
JOIN pg_class c ON c.oid = a.relid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.relid <> %(oid)s::oid
ORDER BY a.level
"""
_TREE = "SELECT relid::oid::bigint FROM pg_partition_tree(%s::oid)"

Key = tuple[int, int]
"""A partition as it is attached: its oid and the transaction that attached it."""


class Partitions:
    def __init__(
        self,
        connections: Connections,
        relations: Mapping[int, Relation],
        on_changed: Callable[[], None],
    ) -> None:
        """``on_changed``: a partition was attached or detached (check the schema now,
        ``drift``)."""
        self.connections = connections
        self.active = False
        """A partitioned table is synced (since then every Relation message is looked
        up: one catalog query each, and Relation messages are rare)."""
        self.relations = relations
        """The replication stream's relations by oid: the ones seen before a partitioned
        table was synced get their ancestors when it is."""
        self.learned: dict[int, set[Key]] = {}
        """Per partitioned table (oid): partitions created in it since shapes on it read
        the catalog, whose rows all came through the WAL."""
        self.on_changed = on_changed
        self.parents: dict[int, tuple[tuple[str, str], ...]] = {}
        """Per partition (oid), the partitioned tables it was last known to be under."""
        self.left: dict[int, tuple[tuple[str, str], ...]] = {}
        """Per relation (oid) just looked up, the partitioned tables it is no longer
        under (detached): the collector takes them with the Relation message."""

    async def annotate(self, relation: Relation, streamed: bool = True) -> None:
        """Put ``relation``'s partitioned ancestors on it (a Relation message, before
        the changes that follow it are routed; not ``streamed``: one cached before)."""
        async with self.connections.catalog_session() as conn:
            cursor = await conn.execute(_ANCESTORS, {"oid": relation.oid})
            rows = await cursor.fetchall()
        ancestors = tuple((str(r[0]), str(r[1])) for r in rows)
        if ancestors != relation.ancestors:
            relation.ancestors = ancestors
        left = tuple(a for a in self.parents.get(relation.oid, ()) if a not in ancestors)
        if left and streamed:
            self.left[relation.oid] = left
        if ancestors:
            self.parents[relation.oid] = ancestors
        else:
            self.parents.pop(relation.oid, None)
        if rows and rows[0][3] is not None:
            key = (relation.oid, int(rows[0][3]))
            if rows[0][4]:
                for row in rows:  # created as a partition: its rows come through the WAL
                    self.learned.setdefault(int(row[2]), set()).add(key)
            elif not any(key in self.learned.get(int(row[2]), ()) for row in rows):
                self.on_changed()  # attached: the shapes on its ancestors miss its rows

    async def follow(self, table: Table) -> None:
        """A shape (or subquery) on the partitioned ``table`` is about to take its
        snapshot: from now on Relation messages are looked up, and the partitions the
        stream already described get their ancestors."""
        self.active = True
        async with self.connections.catalog_session() as conn:
            cursor = await conn.execute(_TREE, (table.oid,))
            oids = {int(row[0]) for row in await cursor.fetchall()}
        root = (table.schema, table.name)
        for oid in oids - {table.oid}:
            parents = self.parents.get(oid, ())
            if root not in parents:
                self.parents[oid] = (*parents, root)
            relation = self.relations.get(oid)
            if relation is not None:
                await self.annotate(relation, streamed=False)

    def holds(self, table: Table, oid: int) -> bool:
        """Did a shape built on the partitioned ``table`` take the partition ``oid``'s
        rows (it was there when the shape read the catalog, or was created since)?"""
        return any(p[0] == oid for p in table.partitions) or any(
            p[0] == oid for p in self.learned.get(table.oid, ())
        )

    def drift(self, table: Table, now: Table) -> str | None:
        """Why a shape built on the partitioned ``table`` cannot go on with its
        partitions as they are ``now``, or None."""
        known = {p[:2] for p in table.partitions} | self.learned.get(table.oid, set())
        current = {p[:2]: p[2] for p in now.partitions}
        if any(p not in current for p in known):
            return "partition detached or dropped"
        if any(not created for p, created in current.items() if p not in known):
            return "partition attached"
        return None

    def settle(
        self, before: dict[int, set[Key]], checked: set[int], tables: Mapping[int, Table]
    ) -> None:
        """After a schema check of the tables ``checked`` (oids), which read ``tables``
        (those still there) when ``learned`` was ``before``: the shapes that drifted are
        gone, so what was learned then and is no longer there is forgotten (not what
        was learned after the read), and the partitions created as such are learned."""
        for oid in checked:
            now = tables.get(oid)
            current = {p[:2] for p in now.partitions} if now is not None else set()
            learned = self.learned.get(oid)
            if learned is not None:
                learned -= before.get(oid, set()) - current
            if now is not None and now.partitioned:
                self.learned.setdefault(oid, set()).update(p[:2] for p in now.partitions if p[2])
