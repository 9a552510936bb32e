"""``pysync uninstall`` on a database an engine published tables in: the slot and the
publication go, and only the replica identities pysync changed are set back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import psycopg

from engine_runner import make
from pysync.engine import Engine
from test_cli import UNREACHABLE, clean_env

Conn = psycopg.Connection[tuple[Any, ...]]


def uninstall(
    database_url: str, *args: str, answer: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pysync.cli", "uninstall", "--database-url", database_url, *args],
        input=answer if answer is not None else "",
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )


def state(conn: Conn) -> dict[str, object]:
    identities: dict[str, str] = dict(
        conn.execute(
            "SELECT relname, relreplident::text FROM pg_class WHERE relname IN ('d', 'f', 'k')"
        ).fetchall()
    )
    return {
        "identities": identities,
        "publications": [r[0] for r in conn.execute("SELECT pubname FROM pg_publication")],
        "slots": [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots")],
    }


async def published_by_an_engine(database_url: str, conn: Conn) -> None:
    """d was DEFAULT, k USING INDEX and f FULL before an engine published them."""
    conn.execute("CREATE TABLE d (id int PRIMARY KEY)")
    conn.execute("CREATE TABLE k (id int PRIMARY KEY, v int NOT NULL)")
    conn.execute("CREATE UNIQUE INDEX k_v ON k (v)")
    conn.execute("ALTER TABLE k REPLICA IDENTITY USING INDEX k_v")
    conn.execute("CREATE TABLE f (id int PRIMARY KEY)")
    conn.execute("ALTER TABLE f REPLICA IDENTITY FULL")
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    try:
        for table in ("d", "k", "f"):
            # Published (and recorded) before its snapshot: wait for it, or the stop
            # below may come first.
            await make(engine, table)
    finally:
        await engine.stop()
    # The walsender may hold the slot a moment after the engine stopped.
    deadline = time.monotonic() + 30
    while conn.execute("SELECT count(*) FROM pg_replication_slots WHERE active").fetchone() != (0,):
        assert time.monotonic() < deadline, "the slot stays active after the engine stopped"
        time.sleep(0.05)


async def test_uninstall_drops_slot_and_publication_and_restores_only_changed_identities(
    database_url: str, conn: Conn
) -> None:
    await published_by_an_engine(database_url, conn)
    assert state(conn) == {
        "identities": {"d": "f", "k": "f", "f": "f"},
        "publications": ["pysync"],
        "slots": ["pysync"],
    }

    done = uninstall(database_url, "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    statements = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ")]
    assert statements == [
        'ALTER TABLE "public"."d" REPLICA IDENTITY DEFAULT;',
        'ALTER TABLE "public"."k" REPLICA IDENTITY USING INDEX "k_v";',
        'DROP PUBLICATION "pysync";',
        "SELECT pg_drop_replication_slot('pysync');",
    ]
    assert "Proceed?" not in done.stdout
    assert state(conn) == {
        "identities": {"d": "d", "k": "i", "f": "f"},
        "publications": [],
        "slots": [],
    }

    again = uninstall(database_url, "--yes")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(
        'nothing to do: no publication "pysync" and no replication slot "pysync" in database'
    ), again.stdout


async def test_answering_no_changes_nothing(database_url: str, conn: Conn) -> None:
    await published_by_an_engine(database_url, conn)
    before = state(conn)
    done = uninstall(database_url, answer="n\n")
    assert done.returncode == 1
    assert 'DROP PUBLICATION "pysync";' in done.stdout
    assert done.stdout.endswith("Proceed? [y/N] nothing done\n"), done.stdout
    assert state(conn) == before
    # No answer at all (stdin closed) is no as well.
    assert uninstall(database_url).returncode == 1
    assert state(conn) == before


async def test_a_running_pysync_is_named_and_nothing_is_done(database_url: str, conn: Conn) -> None:
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    try:
        done = await asyncio.to_thread(uninstall, database_url, "--yes")
    finally:
        await engine.stop()
    assert done.returncode == 1
    assert done.stderr.startswith('pysync: replication slot "pysync" is in use by the process')
    assert done.stderr.endswith("stop pysync serve first\n")
    assert state(conn)["slots"] == ["pysync"]


def test_an_unreachable_database_is_one_line() -> None:
    done = uninstall(UNREACHABLE, "--yes")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(
        "pysync: cannot connect to the database at 127.0.0.1:1/postgres: Connection refused"
    ), done.stderr
    assert done.stderr.count("\n") == 1


def test_only_recorded_tables_still_full_are_set_back(database_url: str, conn: Conn) -> None:
    # A publication without pysync's record (an older pysync's): its FULL table is named
    # in a note and left FULL; the publication still goes.
    conn.execute("CREATE TABLE d (id int PRIMARY KEY)")
    conn.execute("ALTER TABLE d REPLICA IDENTITY FULL")
    conn.execute("CREATE PUBLICATION pysync FOR TABLE d")
    done = uninstall(database_url, "--yes")
    assert done.returncode == 0, done.stderr
    assert 'publication "pysync" holds no record' in done.stdout
    assert done.stdout.splitlines()[0].endswith(": public.d")
    assert state(conn) == {"identities": {"d": "f"}, "publications": [], "slots": []}


async def test_a_table_changed_since_is_left_as_it_is(database_url: str, conn: Conn) -> None:
    await published_by_an_engine(database_url, conn)
    conn.execute("ALTER TABLE d REPLICA IDENTITY NOTHING")  # the app's own choice since
    done = uninstall(database_url, "--yes")
    assert done.returncode == 0, done.stderr
    assert "ALTER TABLE" in done.stdout and '"d"' not in done.stdout
    assert state(conn)["identities"] == {"d": "n", "k": "i", "f": "f"}


def test_no_database_or_a_bad_name_is_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pysync.cli", "uninstall", "--yes"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (
        2,
        "pysync: give the database with --database-url or DATABASE_URL\n",
    )
    bad = uninstall(UNREACHABLE, "--slot", "Bad-Slot")
    assert bad.returncode == 2
    assert bad.stderr.startswith("pysync: invalid slot name 'Bad-Slot'")
    assert bad.stderr.count("\n") == 1
