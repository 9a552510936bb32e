"""``pysync uninstall``: take pysync out of a database. Drops its replication slot and
publication, and sets each table pysync made ``REPLICA IDENTITY FULL`` back to the
identity it had before (recorded in the publication's comment when pysync changed it);
tables that were FULL already, or were changed again since, are left as they are."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import psycopg
from psycopg import sql

from pysync.postgres.publication import recorded_identities
from pysync.postgres.slot import RANDOM_DIGITS

Conn = psycopg.Connection[tuple[Any, ...]]

_IDENTITIES = {"d": sql.SQL("DEFAULT"), "n": sql.SQL("NOTHING")}


@dataclass
class Plan:
    """What uninstalling does: the statements, in order, and notes on what it leaves."""

    changes: list[sql.Composed] = field(default_factory=list)
    """Identities restored and the publication dropped: one transaction."""
    drop_slot: sql.Composed | None = None
    """Last: dropping a slot is not transactional."""
    notes: list[str] = field(default_factory=list)
    in_use: str | None = None
    """Why it cannot run now (the slot is held by a running pysync)."""

    @property
    def statements(self) -> list[sql.Composed]:
        return [*self.changes, *([self.drop_slot] if self.drop_slot is not None else [])]


def plan(conn: Conn, publication: str, slot: str) -> Plan:
    """The statements that remove pysync's slot and publication from the connected
    database and restore the replica identities pysync changed."""
    result = Plan()
    row = conn.execute(
        "SELECT oid, obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %s",
        (publication,),
    ).fetchone()
    if row is not None:
        entries = recorded_identities(row[1])
        if entries is None:
            # A publication of a pysync before this record: which of its FULL tables
            # pysync set FULL is unknown, so none is touched.
            full = conn.execute(
                "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_publication_rel pr "
                "JOIN pg_class c ON c.oid = pr.prrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE pr.prpubid = %s AND c.relreplident = 'f' ORDER BY 1",
                (row[0],),
            ).fetchall()
            if full:
                result.notes.append(
                    f'publication "{publication}" holds no record of the replica identities '
                    "pysync changed; left REPLICA IDENTITY FULL (set each back with ALTER "
                    "TABLE ... REPLICA IDENTITY DEFAULT if pysync set it): "
                    + ", ".join(name for (name,) in full)
                )
            entries = []
        for entry in entries:
            restore = _restore(conn, entry)
            if restore is not None:
                result.changes.append(restore)
        result.changes.append(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(publication)))
    held = conn.execute(
        "SELECT active_pid FROM pg_replication_slots "
        "WHERE slot_name = %s AND database = current_database()",
        (slot,),
    ).fetchone()
    if held is not None:
        if held[0] is not None:
            result.in_use = (
                f'replication slot "{slot}" is in use by the process with PID {held[0]} '
                "(on the database server): stop pysync serve first"
            )
        result.drop_slot = sql.SQL("SELECT pg_drop_replication_slot({})").format(sql.Literal(slot))
    if result.in_use is None:
        # A pysync with --random-slot-name replicates from "<slot>_<16 hex digits>": its
        # temporary slot goes with it, but its publication must not go before.
        running = conn.execute(
            "SELECT slot_name, active_pid FROM pg_replication_slots "
            "WHERE database = current_database() AND temporary AND active_pid IS NOT NULL "
            "AND slot_name ~ %s",
            (f"^{slot}_[0-9a-f]{{{RANDOM_DIGITS}}}$",),
        ).fetchone()
        if running is not None:
            result.in_use = (
                f'the temporary replication slot "{running[0]}" is in use by the process '
                f"with PID {running[1]} (on the database server): stop pysync serve first"
            )
    return result


def _restore(conn: Conn, entry: dict[str, Any]) -> sql.Composed | None:
    """``ALTER TABLE ... REPLICA IDENTITY <before>`` for a recorded table that is still
    there and still FULL (else None)."""
    oid, identity, index = entry.get("oid"), entry.get("identity"), entry.get("index")
    if not isinstance(oid, int):
        return None
    row = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = %s AND c.relreplident = 'f'",
        (oid,),
    ).fetchone()
    if row is None:
        return None  # dropped, or its identity changed since: not pysync's to undo
    target = sql.Identifier(row[0], row[1])
    if identity == "i" and isinstance(index, str):
        before: sql.Composable = sql.SQL("USING INDEX {}").format(sql.Identifier(index))
    elif isinstance(identity, str) and identity in _IDENTITIES:
        before = _IDENTITIES[identity]
    else:
        return None
    return sql.SQL("ALTER TABLE {} REPLICA IDENTITY {}").format(target, before)


def run(
    database_url: str,
    publication: str,
    slot: str,
    *,
    yes: bool,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
) -> int:
    """Plan, show, ask, do: the exit status (0 done or nothing to do, 1 not done).
    Connection failures propagate (psycopg.OperationalError)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        where = f'database "{conn.info.dbname}" on {conn.info.host}:{conn.info.port}'
        todo = plan(conn, publication, slot)
        for note in todo.notes:
            print(f"note: {note}", file=stdout)
        if not todo.statements:
            print(
                f'nothing to do: no publication "{publication}" and no replication slot '
                f'"{slot}" in {where}',
                file=stdout,
            )
            return 0
        if todo.in_use is not None:
            print(f"pysync: {todo.in_use}", file=sys.stderr)
            return 1
        print(f"pysync uninstall will run in {where}:", file=stdout)
        for statement in todo.statements:
            print(f"  {statement.as_string(conn)};", file=stdout)
        if not yes:
            print("Proceed? [y/N] ", end="", file=stdout, flush=True)
            if stdin.readline().strip().lower() not in ("y", "yes"):
                print("nothing done", file=stdout)
                return 1
        # Identities and the publication (which holds their record) go together or not
        # at all.
        with conn.transaction():
            for statement in todo.changes:
                conn.execute(statement)
        if todo.drop_slot is not None:
            conn.execute(todo.drop_slot)
        print("done", file=stdout)
        return 0
