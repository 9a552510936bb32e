"""pysync's publication: created once, tables added as the first shape on them appears."""

from __future__ import annotations

import contextlib
import re

import psycopg
from psycopg import errors, sql

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


def ensure_publication(conn: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    check_name("publication", name)
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
    if exists:
        return
    with contextlib.suppress(errors.DuplicateObject):  # created concurrently
        conn.execute(sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(name)))


def publish_table(
    conn: psycopg.Connection[tuple[object, ...]], publication: str, schema: str, table: str
) -> None:
    """Add ``schema.table`` to the publication and set ``REPLICA IDENTITY FULL``.

    FULL identity makes updates and deletes carry the whole old row, which shapes need
    for move-out detection and ``replica=full``. Idempotent; ``conn`` must be in
    autocommit mode.
    """
    check_name("publication", publication)
    target = sql.Identifier(schema, table)
    row = conn.execute(
        "SELECT c.relreplident, EXISTS (SELECT 1 FROM pg_publication_rel pr "
        "  JOIN pg_publication p ON p.oid = pr.prpubid "
        "  WHERE p.pubname = %s AND pr.prrelid = c.oid) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (publication, schema, table),
    ).fetchone()
    if row is None:
        raise PublicationError(f'table "{schema}"."{table}" does not exist')
    identity, published = row
    if identity == "f" and published:
        return
    try:
        with conn.transaction():
            if not published:
                # pgoutput decodes a change with the catalog as of that change: rows
                # written by a transaction still open when the table joins the
                # publication are never sent, yet a snapshot taken next cannot see them
                # either. This lock waits for the table's writers and holds off new ones
                # until the publication change commits.
                conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(target))
            if identity != "f":
                conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(target))
            if not published:
                conn.execute(
                    sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                        sql.Identifier(publication), target
                    )
                )
    except errors.DuplicateObject:
        pass  # added concurrently by another shape's creation
    except errors.InsufficientPrivilege as exc:
        user = conn.info.user
        raise PublicationError(
            f'role "{user}" cannot publish table "{schema}"."{table}" ({exc.diag.message_primary}). '
            f"Run as the table's owner or a superuser: "
            f'ALTER TABLE "{schema}"."{table}" REPLICA IDENTITY FULL; '
            f'ALTER PUBLICATION "{publication}" ADD TABLE "{schema}"."{table}";'
        ) from exc
