"""What the bench does in Postgres: checks, its marker table, publications and slots.

Every object it creates carries the run's id in its name (``pysync_bench_<id>...``), so
a bench never touches a user's slot or publication, and cleanup drops exactly its own.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pysync.bench.errors import BenchError

Conn = psycopg.Connection[tuple[Any, ...]]

PGBENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")
END_MESSAGE = "pysync-bench-end"
"""Prefix of the logical message that marks the end of a backlog."""


@dataclass(frozen=True)
class Names:
    """The run's own objects."""

    run_id: str

    @property
    def prefix(self) -> str:
        return f"pysync_bench_{self.run_id}"

    @property
    def marker_table(self) -> str:
        return f"{self.prefix}_marker"

    @property
    def engine_slot(self) -> str:
        return self.prefix

    @property
    def engine_publication(self) -> str:
        return self.prefix

    @property
    def recv_slot(self) -> str:
        return f"{self.prefix}_recv"

    @property
    def recv_publication(self) -> str:
        return f"{self.prefix}_recv"

    @property
    def verify_slot(self) -> str:
        return f"{self.prefix}_verify"

    @property
    def drain_slot(self) -> str:
        return f"{self.prefix}_drain"


def connect(url: str) -> Conn:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"cannot connect to the database: {reason}") from exc


def scalar(conn: Conn, query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def wal_lsn(conn: Conn) -> int:
    """``pg_current_wal_lsn()`` in bytes."""
    return int(scalar(conn, "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"))


def check_logical(conn: Conn) -> None:
    level = scalar(conn, "SHOW wal_level")
    if level != "logical":
        raise BenchError(
            f"the database has wal_level={level}: set wal_level=logical "
            "(postgresql.conf) and restart it"
        )


def pgbench_scale(conn: Conn) -> int:
    """The scale of the pgbench tables there; BenchError if they are missing."""
    present = {
        name
        for (name,) in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)",
            (list(PGBENCH_TABLES),),
        )
    }
    missing = [t for t in PGBENCH_TABLES if t not in present]
    if missing:
        raise BenchError(
            f"the database has no pgbench tables ({', '.join(missing)} missing): "
            "drop --no-init to create them with pgbench -i"
        )
    scale = int(scalar(conn, "SELECT count(*) FROM pgbench_branches"))
    if scale == 0:
        raise BenchError(
            "pgbench_branches is empty: drop --no-init to fill the tables with pgbench -i"
        )
    return scale


def prepare_tables(conn: Conn, marker: str) -> None:
    """Full replica identity on the pgbench tables (as pysync and Electric set it when
    they publish a table) before any phase, so every phase writes the same WAL; and the
    latency marker table, one row."""
    for table in PGBENCH_TABLES:
        conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(sql.Identifier(table)))
    conn.execute(
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, seq bigint NOT NULL)").format(
            sql.Identifier(marker)
        )
    )
    conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 0)").format(sql.Identifier(marker)))


def reset_tables(conn: Conn) -> None:
    """What pgbench does before a run unless ``-n``: each phase starts alike. Done by the
    bench because a TRUNCATE under live shapes would invalidate them."""
    conn.execute("VACUUM pgbench_branches, pgbench_tellers")
    conn.execute("TRUNCATE pgbench_history")


def create_publication(conn: Conn, name: str, tables: list[str]) -> None:
    conn.execute(
        sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(name), sql.SQL(", ").join(sql.Identifier(t) for t in tables)
        )
    )


def create_slot(conn: Conn, name: str, plugin: str = "pgoutput") -> int:
    """A logical slot; returns its consistent point in bytes."""
    return int(
        scalar(
            conn,
            "SELECT (lsn - '0/0'::pg_lsn)::bigint FROM pg_create_logical_replication_slot(%s, %s)",
            (name, plugin),
        )
    )


def drop_slot(conn: Conn, name: str) -> None:
    """Drop a slot, ending the walsender that may still hold it."""
    deadline = time.monotonic() + 10
    while True:
        conn.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s AND active_pid IS NOT NULL",
            (name,),
        )
        try:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (name,),
            )
            return
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def slot_state(conn: Conn, name: str) -> tuple[bool, int | None]:
    """(active, confirmed_flush_lsn in bytes) of a slot."""
    row = conn.execute(
        "SELECT active, (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint FROM pg_replication_slots "
        "WHERE slot_name = %s",
        (name,),
    ).fetchone()
    if row is None:
        return False, None
    return bool(row[0]), None if row[1] is None else int(row[1])


def end_backlog(conn: Conn) -> int:
    """Mark the end of a backlog with a transactional logical message; the WAL position
    after it is where both consumers drain to (``pg_recvlogical --endpos``)."""
    conn.execute("SELECT pg_logical_emit_message(true, %s, 'end')", (END_MESSAGE,))
    return wal_lsn(conn)


def cleanup(url: str, names: Names, *, marker: bool) -> list[str]:
    """Drop every object of this run that is still there; the problems, if any."""
    problems: list[str] = []
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        return [f"could not connect to clean up: {exc}"]
    with conn:
        slots = [
            r[0]
            for r in conn.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE starts_with(slot_name::text, %s)",
                (names.prefix,),
            )
        ]
        for slot in slots:
            try:
                drop_slot(conn, slot)
            except psycopg.Error as exc:
                problems.append(f"slot {slot}: {exc}")
        for (pub,) in conn.execute(
            "SELECT pubname FROM pg_publication WHERE starts_with(pubname::text, %s)",
            (names.prefix,),
        ).fetchall():
            with contextlib.suppress(psycopg.Error):
                conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(pub)))
        if marker:
            try:
                conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(names.marker_table))
                )
            except psycopg.Error as exc:
                problems.append(f"table {names.marker_table}: {exc}")
    return problems
