"""Tables that stopped being ``REPLICA IDENTITY FULL`` while published.

pysync sets FULL when it publishes a table: updates and deletes then carry the whole old
row, and unchanged TOASTed values. Someone may set it back (``ALTER TABLE t REPLICA
IDENTITY DEFAULT``); each Relation message says what the table has now. Shapes that need
the missing values resync on the changes that lack them (``changes.Needs``); this puts
FULL back (not on a table with VIRTUAL generated columns: Postgres would refuse its
updates and deletes), says so in the log and in the health endpoint's ``warnings``.
With manual publishing (the publisher may alter nothing) it only warns: restoring FULL
is the database owner's to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from pysync.postgres.pgoutput import Relation
from pysync.postgres.publication import Publisher

log = logging.getLogger(__name__)

_VIRTUAL = (
    "SELECT EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s AND a.attgenerated = 'v' AND NOT a.attisdropped)"
)
IDENTITIES = {"d": "DEFAULT", "n": "NOTHING", "i": "USING INDEX", "f": "FULL"}


class ReplicaIdentityWatch:
    def __init__(
        self, publisher: Publisher, spawn: Callable[[Coroutine[Any, Any, None], str], None]
    ) -> None:
        self.publisher = publisher
        self.spawn = spawn
        self.warnings: dict[tuple[str, str], str] = {}
        """Per table, what happened to its replica identity (for the health endpoint)."""
        self._restoring: set[tuple[str, str]] = set()

    def changed(self, relation: Relation) -> None:
        """A Relation message: restore FULL when the table lost it (or, manual: warn)."""
        table = (relation.namespace, relation.name)
        if relation.replica_identity == "f" or table in self._restoring:
            return
        identity = IDENTITIES.get(relation.replica_identity, relation.replica_identity)
        message = (
            f'table "{table[0]}"."{table[1]}" is REPLICA IDENTITY {identity}, not FULL '
            "(changed outside pysync): shapes that need old rows or unchanged TOASTed "
            "values resync"
        )
        if self.publisher.manual:
            log.warning(
                '%s; manual publishing: run ALTER TABLE "%s"."%s" REPLICA IDENTITY FULL',
                message,
                *table,
            )
            self.warnings[table] = message + "; manual publishing: not restored"
            return
        log.warning("%s; restoring REPLICA IDENTITY FULL", message)
        self.warnings[table] = message + "; restoring FULL"
        self._restoring.add(table)
        self.spawn(self._restore(table, message), f"pysync-replica-identity-{table[1]}")

    async def _restore(self, table: tuple[str, str], message: str) -> None:
        try:
            async with self.publisher.connections.catalog_session() as conn:
                cursor = await conn.execute(_VIRTUAL, table)
                virtual = await cursor.fetchone()
            if virtual is not None and virtual[0]:
                # FULL would make Postgres refuse the app's updates and deletes (see
                # definition._check_replicable): whoever set it back meant that.
                log.warning("%s.%s has VIRTUAL generated columns: left as it is", *table)
                self.warnings[table] = (
                    f"{message}; not restored: it has VIRTUAL generated columns, with which "
                    "Postgres refuses its updates and deletes under FULL"
                )
                return
            await self.publisher.publish(*table)
        except Exception as exc:  # noqa: BLE001 - reported; shapes resync meanwhile
            log.error("could not restore REPLICA IDENTITY FULL on %s.%s: %s", *table, exc)
            self.warnings[table] = f"{message}; FULL could not be restored: {exc}"
            return
        finally:
            self._restoring.discard(table)
        log.warning("restored REPLICA IDENTITY FULL on %s.%s", *table)
        self.warnings[table] = f"{message}; pysync restored FULL"
