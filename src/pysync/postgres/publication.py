"""pysync's publication: created once, tables added as the first shape on them appears."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

import psycopg
from psycopg import errors, sql

from pysync.postgres.connections import Connections
from pysync.postgres.identifiers import quote_identifier
from pysync.shared_runs import Abandoned, SharedRuns, never

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PublicationError(RuntimeError):
    """A table could not be published (usually: the role does not own it)."""


def check_name(kind: str, name: str) -> str:
    """Slot and publication names end up in replication commands, which take no
    bind parameters: allow only plain lower-case identifiers."""
    if not _NAME.match(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: use 1-63 characters of a-z, 0-9 and _, "
            "starting with a letter or _"
        )
    return name


GENERATED_COLUMNS_VERSION = 180000
"""Postgres 18 refuses UPDATE and DELETE on a table whose REPLICA IDENTITY FULL holds a
generated column the publication does not publish: from 18 on, pysync's publication
publishes stored generated columns (shapes still leave them out unless listed)."""


def ensure_publication(conn: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    check_name("publication", name)
    target = sql.Identifier(name)
    generated = conn.info.server_version >= GENERATED_COLUMNS_VERSION
    row = conn.execute(
        "SELECT "
        + ("pubgencols::text" if generated else "'n'")
        + " FROM pg_publication WHERE pubname = %s",
        (name,),
    ).fetchone()
    if row is not None:
        if generated and row[0] != "s":
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} SET (publish_generated_columns = stored)").format(
                    target
                )
            )
        return
    create = sql.SQL("CREATE PUBLICATION {}").format(target)
    if generated:
        create += sql.SQL(" WITH (publish_generated_columns = stored)")
    with contextlib.suppress(errors.DuplicateObject):  # created concurrently
        conn.execute(create)


_STATE = (
    "SELECT c.relreplident, EXISTS (SELECT 1 FROM pg_publication_rel pr "
    "  JOIN pg_publication p ON p.oid = pr.prpubid "
    "  WHERE p.pubname = %s AND pr.prrelid = c.oid), "
    "c.oid, (SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
    "  WHERE i.indrelid = c.oid AND i.indisreplident), c.relkind "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s"
)

# The partitions (tables with rows, any level) of a partitioned table that are not
# REPLICA IDENTITY FULL: setting it on the partitioned table does not reach them (nor
# partitions made later), and pgoutput sends each partition's changes as its own.
_PARTITIONS = (
    "SELECT n.nspname, k.relname, k.relreplident, k.oid, "
    "(SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
    "  WHERE i.indrelid = k.oid AND i.indisreplident) "
    "FROM pg_partition_tree(%s::oid) t JOIN pg_class k ON k.oid = t.relid "
    "JOIN pg_namespace n ON n.oid = k.relnamespace "
    "WHERE k.relkind = 'r' AND k.relreplident <> 'f' ORDER BY k.oid"
)
Partition = tuple[str, str, tuple[object, ...]]
"""A partition that is not FULL: schema, name, and its row as ``_STATE``'s (identity,
published, oid, index)."""


def _partitions(rows: list[tuple[object, ...]]) -> list[Partition]:
    return [(str(r[0]), str(r[1]), (r[2], False, r[3], r[4])) for r in rows]


RECORD_KEY = "pysync_replica_identity"
"""The key, in the JSON comment of pysync's publication, of the replica identity each
table had before pysync set it to FULL (``pysync uninstall`` restores them). Kept on the
publication, pysync's own object: nothing of the app's schema changes, it lives in the
database (whichever pysync instance or storage directory published the table), goes
with the publication and is written in the transaction that changes the identity."""

# Serialises the read-modify-write of that comment between sessions publishing
# different tables (each holds only its own table's lock).
_RECORD_LOCK = "SELECT pg_advisory_xact_lock(hashtext('pysync publication'), hashtext(%s))"
_COMMENT = "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %s"


def recorded_identities(comment: str | None) -> list[dict[str, Any]] | None:
    """The tables recorded in a publication's comment (``oid``, ``schema``, ``table``,
    ``identity``: d, n or i, ``index``), or None when it holds no record of pysync's."""
    try:
        record = json.loads(comment or "")
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get(RECORD_KEY), list):
        return None
    return [entry for entry in record[RECORD_KEY] if isinstance(entry, dict)]


def _record(
    publication: str,
    comment: tuple[object, ...] | None,
    tables: list[Partition],
) -> sql.Composed | None:
    """The COMMENT that adds the tables' identities before FULL to the record (None when
    every one is recorded already: its first identity is the one to restore)."""
    text = comment[0] if comment else None
    entries = recorded_identities(text if isinstance(text, str) else None) or []
    added = False
    for schema, table, row in tables:
        identity, _, oid, index = row[:4]
        if any(entry.get("oid") == oid for entry in entries):
            continue
        entries.append(
            {"oid": oid, "schema": schema, "table": table, "identity": identity, "index": index}
        )
        added = True
    if not added:
        return None
    updated = json.dumps({RECORD_KEY: entries}, separators=(",", ":"))
    return sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(
        sql.Identifier(publication), sql.Literal(updated)
    )


class LockTimeout(PublicationError):
    """Publishing waited too long for a lock another session holds on the table."""


class NotPublished(PublicationError):
    """Manual publishing: the table is not in the publication, or not REPLICA IDENTITY
    FULL. ``message`` is Electric's, for clients; ``str()`` adds the statements a
    database owner must run, for the log."""

    def __init__(self, message: str, statements: list[str]) -> None:
        super().__init__(
            f"{message}. Run as the table's owner or a superuser: {' '.join(statements)}"
        )
        self.message = message


class PublishAbandoned(PublicationError):
    """Nobody waits for the publication any more (the requests gave up): stop waiting."""


def _plan(
    publication: str,
    schema: str,
    table: str,
    row: tuple[object, ...] | None,
    partitions: list[Partition],
) -> list[sql.Composed]:
    """The statements that publish the table, given its state and (a partitioned
    table) its partitions that are not FULL (empty: nothing to do)."""
    if row is None:
        raise PublicationError(f'table "{schema}"."{table}" does not exist')
    identity, published = row[:2]
    target = sql.Identifier(schema, table)
    statements: list[sql.Composed] = []
    if not published or partitions:
        # pgoutput decodes a change with the catalog as of that change: rows written by
        # a transaction still open when the table joins the publication are never sent,
        # yet a snapshot taken next cannot see them either. This lock waits for the
        # table's writers and holds off new ones until the publication change commits
        # (on a partitioned table it takes its partitions too).
        statements.append(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(target))
    if identity != "f":
        statements.append(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(target))
    for part_schema, part_name, _ in partitions:
        statements.append(
            sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(
                sql.Identifier(part_schema, part_name)
            )
        )
    if not published:
        statements.append(
            sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(sql.Identifier(publication), target)
        )
    return statements if identity != "f" or not published or partitions else []


_PLAIN = re.compile(r"^[a-z_][a-z0-9_]*$")


def _electric_name(schema: str, table: str) -> str:
    """``"public.items"``: how Electric names a table in its configuration errors."""
    inner = ".".join(
        n if _PLAIN.match(n) else '"' + n.replace('"', '""') + '"' for n in (schema, table)
    )
    return '"' + inner.replace('"', '""') + '"'


def _check_published(
    publication: str,
    schema: str,
    table: str,
    row: tuple[object, ...] | None,
    partitions: list[Partition],
) -> None:
    """Manual publishing: raise NotPublished unless the table is ready to replicate (a
    partitioned table: in the publication, and each of its partitions FULL)."""
    if row is None:
        raise PublicationError(f'table "{schema}"."{table}" does not exist')
    identity, published = row[:2]
    target = f"{quote_identifier(schema)}.{quote_identifier(table)}"
    full = [f"ALTER TABLE {target} REPLICA IDENTITY FULL;"] if identity != "f" else []
    full += [
        f"ALTER TABLE {quote_identifier(s)}.{quote_identifier(t)} REPLICA IDENTITY FULL;"
        for s, t, _ in partitions
    ]
    name = _electric_name(schema, table)
    if not published:
        add = f"ALTER PUBLICATION {quote_identifier(publication)} ADD TABLE {target};"
        raise NotPublished(
            f"Database table {name} is missing from the publication "
            f'"{publication}" and the ELECTRIC_MANUAL_TABLE_PUBLISHING setting prevents '
            "Electric from adding it",
            [*full, add],
        )
    if identity != "f":
        raise NotPublished(
            f"Database table {name} does not have its replica identity set to FULL", full
        )
    if partitions:
        names = ", ".join(_electric_name(s, t) for s, t, _ in partitions)
        raise NotPublished(
            f"Database table {name} is partitioned and its partitions {names} do not have "
            "their replica identity set to FULL",
            full,
        )


def _failure(
    exc: psycopg.Error, user: str | None, publication: str, schema: str, table: str
) -> Exception | None:
    """The error to raise for a failed publication change, or None when it is harmless."""
    if isinstance(exc, errors.DuplicateObject):
        return None  # added concurrently by another shape's creation
    if isinstance(exc, errors.LockNotAvailable):
        return LockTimeout(
            f'Timeout waiting for Postgres lock acquisition on table "{schema}"."{table}": '
            "another session holds a lock on it (a long transaction writing to it?)"
        )
    if isinstance(exc, errors.InsufficientPrivilege):
        return PublicationError(
            f'role "{user}" cannot publish table "{schema}"."{table}" ({exc.diag.message_primary}). '
            f"Run as the table's owner or a superuser: "
            f'ALTER TABLE "{schema}"."{table}" REPLICA IDENTITY FULL; '
            f'ALTER PUBLICATION "{publication}" ADD TABLE "{schema}"."{table}";'
        )
    return exc


def publish_table(
    conn: psycopg.Connection[tuple[object, ...]], publication: str, schema: str, table: str
) -> None:
    """Add ``schema.table`` to the publication and set ``REPLICA IDENTITY FULL``.

    FULL identity makes updates and deletes carry the whole old row, which shapes need
    for move-out detection and ``replica=full``. Idempotent; ``conn`` must be in
    autocommit mode.
    """
    check_name("publication", publication)
    row = conn.execute(_STATE, (publication, schema, table)).fetchone()
    partitions: list[Partition] = []
    if row is not None and row[4] == "p":
        partitions = _partitions(conn.execute(_PARTITIONS, (row[2],)).fetchall())
    statements = _plan(publication, schema, table, row, partitions)
    if not statements:
        return
    assert row is not None
    changed = _changed(schema, table, row, partitions)
    try:
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
            if changed:
                conn.execute(_RECORD_LOCK, (publication,))
                comment = conn.execute(_COMMENT, (publication,)).fetchone()
                record = _record(publication, comment, changed)
                if record is not None:
                    conn.execute(record)
    except psycopg.Error as exc:
        failure = _failure(exc, conn.info.user, publication, schema, table)
        if failure is not None:
            raise failure from exc


def _changed(
    schema: str, table: str, row: tuple[object, ...], partitions: list[Partition]
) -> list[Partition]:
    """The tables whose replica identity the plan sets to FULL (to record)."""
    return ([(schema, table, row)] if row[0] != "f" else []) + partitions


async def _state_async(
    conn: psycopg.AsyncConnection[Any], publication: str, schema: str, table: str
) -> tuple[tuple[object, ...] | None, list[Partition]]:
    """The table's ``_STATE`` row, and its partitions that are not FULL."""
    row = await (await conn.execute(_STATE, (publication, schema, table))).fetchone()
    if row is None or row[4] != "p":
        return row, []
    cursor = await conn.execute(_PARTITIONS, (row[2],))
    return row, _partitions(await cursor.fetchall())


async def publish_table_async(
    conn: psycopg.AsyncConnection[Any], publication: str, schema: str, table: str
) -> None:
    """``publish_table`` on an async connection; a lock wait beyond the session's
    ``lock_timeout`` raises LockTimeout."""
    check_name("publication", publication)
    row, partitions = await _state_async(conn, publication, schema, table)
    statements = _plan(publication, schema, table, row, partitions)
    if not statements:
        return
    assert row is not None
    changed = _changed(schema, table, row, partitions)
    try:
        async with conn.transaction():
            for statement in statements:
                await conn.execute(statement)
            if changed:
                await conn.execute(_RECORD_LOCK, (publication,))
                comment = await (await conn.execute(_COMMENT, (publication,))).fetchone()
                record = _record(publication, comment, changed)
                if record is not None:
                    await conn.execute(record)
    except psycopg.Error as exc:
        failure = _failure(exc, conn.info.user, publication, schema, table)
        if failure is not None:
            raise failure from exc


class Publisher:
    """Publishes tables for new shapes with bounded lock waits.

    One run at a time per table (shapes on other tables never queue behind a lock on
    this one), and one run answers every shape that asked before it started
    (``SharedRuns``: a thousand new shapes of one table cost two runs, not a thousand
    in a row). Each attempt waits at most the session's ``lock_timeout`` for the table
    lock, so writers are held off that long at most, and attempts are retried with
    backoff for ``wait`` seconds before LockTimeout is raised.
    """

    def __init__(
        self,
        connections: Connections,
        publication: str,
        *,
        wait: float = 5.0,
        manual: bool = False,
    ) -> None:
        self.connections = connections
        self.publication = check_name("publication", publication)
        self.wait = wait
        self.manual = manual
        """Change nothing (``ELECTRIC_MANUAL_TABLE_PUBLISHING``): only check that the
        table is published and FULL, else NotPublished."""
        self._runs: SharedRuns[tuple[str, str], None] = SharedRuns(self._run)

    async def publish(self, schema: str, table: str, abandoned: Abandoned = never) -> None:
        """Publish ``schema.table`` (manual: check that it is); give up with
        PublishAbandoned as soon as ``abandoned()`` says nobody waits for it any more
        (for every caller of the run)."""
        # Checked for every new shape, not cached: a table dropped and created again
        # under the same name is not in the publication any more.
        try:
            async with asyncio.timeout(self.wait):
                await self._runs((schema, table), abandoned)
        except TimeoutError:
            raise LockTimeout(
                f'Timeout waiting for Postgres lock acquisition on table "{schema}"."{table}"'
            ) from None

    async def _run(self, relation: tuple[str, str], abandoned: Abandoned) -> None:
        schema, table = relation
        if self.manual:
            async with self.connections.catalog_session() as conn:
                row, partitions = await _state_async(conn, self.publication, schema, table)
                _check_published(self.publication, schema, table, row, partitions)
            return
        deadline = time.monotonic() + self.wait
        backoff = 0.05
        while True:
            try:
                async with self.connections.catalog_session() as conn:
                    await publish_table_async(conn, self.publication, schema, table)
                return
            except LockTimeout:
                if time.monotonic() + backoff >= deadline:
                    raise
            await asyncio.sleep(backoff)
            if abandoned():
                raise PublishAbandoned(f'nobody waits for "{schema}"."{table}" any more')
            backoff = min(backoff * 2, 1.0)

    async def close(self) -> None:
        await self._runs.close()
