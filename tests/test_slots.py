"""Temporary and randomly named replication slots, and closing idle connections
(Electric's CLEANUP_REPLICATION_SLOTS_ON_SHUTDOWN,
ELECTRIC_TEMPORARY_REPLICATION_SLOT_USE_RANDOM_NAME, ELECTRIC_REPLICATION_IDLE_TIMEOUT),
against ``pysync serve`` on the real Postgres."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

import pysync
from pysync.config import SettingsError, duration, env_origins, from_env, make_settings
from pysync.postgres.cluster import free_port
from serve_process import ServeProcess

Conn = psycopg.Connection[tuple[Any, ...]]
INFO = ("--log-level", "info")
"""For ``ServeProcess.stop``: a clean stop is read from uvicorn's "shutdown complete"."""
RANDOM_NAME = re.compile(r"pysync_[0-9a-f]{16}")


def slots(conn: Conn) -> list[tuple[str, bool, bool]]:
    """(name, temporary, active) of the test database's slots."""
    rows = conn.execute(
        "SELECT slot_name, temporary, active FROM pg_replication_slots "
        "WHERE database = current_database() ORDER BY slot_name"
    ).fetchall()
    return [(str(name), bool(temporary), bool(active)) for name, temporary, active in rows]


def walsender(conn: Conn) -> int | None:
    """The PID of the process replicating from the test database's (only) slot."""
    row = conn.execute("SELECT active_pid FROM pg_replication_slots").fetchone()
    return None if row is None else row[0]


def until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not so in time"
        time.sleep(0.05)


def get(base: str, **params: str) -> httpx.Response:
    return httpx.get(f"{base}/v1/shape", params=params, timeout=30)


def rows(response: httpx.Response) -> dict[int, int]:
    """id -> n of the inserts and updates in a response (values are text on the wire)."""
    return {
        int(m["value"]["id"]): int(m["value"]["n"])
        for m in response.json()
        if "headers" in m and m["headers"].get("operation") in ("insert", "update")
    }


@pytest.fixture
def items(conn: Conn) -> Conn:
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)")
    conn.execute("INSERT INTO items VALUES (1, 10), (2, 20)")
    return conn


# -- temporary slots ------------------------------------------------------------------


def test_a_temporary_slot_is_gone_after_sigterm_and_after_sigkill(
    database_url: str, items: Conn, tmp_path: Path
) -> None:
    port = free_port()
    server = ServeProcess.on(database_url, port, tmp_path / "s", "--temporary-slot", *INFO)
    try:
        assert slots(items) == [("pysync", True, True)]
        assert server.stop()
        # Postgres dropped it with the connection: nothing holds WAL.
        assert slots(items) == []
        server = ServeProcess.on(
            database_url,
            port,
            tmp_path / "s",
            *INFO,
            env={"CLEANUP_REPLICATION_SLOTS_ON_SHUTDOWN": "true"},
        )
        assert slots(items) == [("pysync", True, True)]
        server.kill()
        # The walsender ends once it sees the killed process' socket closed.
        until(lambda: slots(items) == [])
    finally:
        server.kill()


def test_a_restart_on_a_temporary_slot_makes_old_handles_refetch(
    database_url: str, items: Conn, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = ServeProcess.on(database_url, port, tmp_path / "s", "--temporary-slot", *INFO)
    try:
        first = get(base, table="items", offset="-1")
        assert first.status_code == 200 and set(rows(first)) == {1, 2}
        handle, offset = first.headers["electric-handle"], first.headers["electric-offset"]
        assert server.stop()
        items.execute("UPDATE items SET n = 11 WHERE id = 1")  # no slot saw this
        items.execute("INSERT INTO items VALUES (3, 30)")
        server = ServeProcess.on(database_url, port, tmp_path / "s", "--temporary-slot", *INFO)
        old = get(base, table="items", handle=handle, offset=offset)
        assert old.status_code == 409, old.text
        fresh = get(base, table="items", offset="-1")
        assert fresh.status_code == 200
        assert fresh.headers["electric-handle"] != handle
        assert rows(fresh) == {1: 11, 2: 20, 3: 30}
    finally:
        server.kill()


def test_a_lost_replication_connection_loses_a_temporary_slot_and_its_shapes(
    database_url: str, items: Conn, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = ServeProcess.on(database_url, port, tmp_path / "s", "--temporary-slot")
    try:
        first = get(base, table="items", offset="-1")
        handle, offset = first.headers["electric-handle"], first.headers["electric-offset"]
        pid = walsender(items)
        items.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # pysync reconnects on a new temporary slot: what the old one would have sent
        # is lost, so the shape goes and its clients refetch.
        until(lambda: walsender(items) not in (None, pid))
        items.execute("INSERT INTO items VALUES (5, 50)")
        until(lambda: get(base, table="items", handle=handle, offset=offset).status_code == 409)
        fresh = get(base, table="items", offset="-1")
        assert fresh.headers["electric-handle"] != handle
        assert rows(fresh) == {1: 10, 2: 20, 5: 50}
        assert [t for _, t, _ in slots(items)] == [True]
    finally:
        server.kill()


def test_uninstall_waits_for_a_pysync_on_a_random_temporary_slot(
    database_url: str, items: Conn, tmp_path: Path
) -> None:
    port = free_port()
    server = ServeProcess.on(
        database_url, port, tmp_path / "s", "--temporary-slot", "--random-slot-name"
    )
    try:
        get(f"http://127.0.0.1:{port}", table="items", offset="-1")  # publishes the table
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pysync.cli",
                "uninstall",
                "--database-url",
                database_url,
                "--yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stdout
        assert "is in use by the process with PID" in done.stderr
        assert RANDOM_NAME.search(done.stderr)
        # Nothing was done: the publication still publishes the table.
        assert items.execute(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pysync'"
        ).fetchone() == (1,)
    finally:
        server.kill()


def test_a_temporary_slot_does_not_take_over_a_permanent_one(
    database_url: str, items: Conn, tmp_path: Path
) -> None:
    items.execute("SELECT pg_create_logical_replication_slot('pysync', 'pgoutput')")
    server = ServeProcess(
        ["--database-url", database_url, "--port", str(free_port()), "--storage-dir"]
        + [str(tmp_path / "s"), "--temporary-slot"]
    )
    assert server.wait_exit() == 1
    assert "a permanent replication slot 'pysync' exists" in server.output()
    assert slots(items) == [("pysync", False, False)]


def test_random_temporary_slot_names_let_two_instances_share_a_database(
    database_url: str, items: Conn, tmp_path: Path
) -> None:
    env = {
        "CLEANUP_REPLICATION_SLOTS_ON_SHUTDOWN": "true",
        "ELECTRIC_TEMPORARY_REPLICATION_SLOT_USE_RANDOM_NAME": "true",
    }
    one = ServeProcess.on(database_url, free_port(), tmp_path / "one", *INFO, env=env)
    two = ServeProcess.on(database_url, free_port(), tmp_path / "two", *INFO, env=env)
    try:
        found = slots(items)
        assert len(found) == 2 and all(temporary and active for _, temporary, active in found)
        names = [name for name, _, _ in found]
        assert all(RANDOM_NAME.fullmatch(name) for name in names), names
        assert names[0] != names[1]
        assert one.stop() and two.stop()
        assert slots(items) == []
    finally:
        one.kill()
        two.kill()


def test_a_random_name_without_a_temporary_slot_is_said_to_have_no_effect(
    database_url: str, items: Conn, tmp_path: Path
) -> None:
    server = ServeProcess.on(
        database_url, free_port(), tmp_path / "s", "--random-slot-name", "--slot", "s" * 60
    )
    try:
        assert slots(items) == [("s" * 60, False, True)]
        assert "a random slot name is only used for a temporary slot" in server.output()
    finally:
        server.kill()


# -- closing idle connections ---------------------------------------------------------


def backends(conn: Conn) -> int:
    """Sessions on the test database other than ``conn``: pysync's (the walsender too)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def wal_position(conn: Conn) -> str:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def confirmed_past(conn: Conn, lsn: str) -> bool:
    row = conn.execute(
        "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots", (lsn,)
    ).fetchone()
    assert row is not None
    return bool(row[0])


def test_idle_connections_close_and_reopen_without_losing_a_change(
    database_url: str, items: Conn, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Electric's unit: 500 ms (read as seconds it would never close in this test).
    server = ServeProcess.on(
        database_url,
        port,
        tmp_path / "s",
        "--log-level",
        "info",
        long_poll_timeout=1,
        env={"ELECTRIC_REPLICATION_IDLE_TIMEOUT": "500"},
    )
    try:
        first = get(base, table="items", offset="-1")
        assert first.status_code == 200 and set(rows(first)) == {1, 2}
        handle, offset = first.headers["electric-handle"], first.headers["electric-offset"]
        until(lambda: backends(items) == 0)
        assert slots(items) == [("pysync", False, False)]
        # Written while idle, as many transactions: far more than replication reads at once.
        items.execute(
            "DO $$ BEGIN FOR i IN 11..5010 LOOP "
            "UPDATE items SET n = i WHERE id = 1; COMMIT; END LOOP; END $$"
        )
        written = wal_position(items)
        assert not confirmed_past(items, written)  # held for pysync meanwhile
        # Held until replication read them all: not an up-to-date without the last.
        catch_up = get(base, table="items", handle=handle, offset=offset)
        assert catch_up.status_code == 200, catch_up.text
        assert rows(catch_up) == {1: 5010}  # so: reopened, and resumed where it stopped
        # What was read is confirmed: the slot no longer holds the WAL written while idle.
        until(lambda: confirmed_past(items, written))
        offset = catch_up.headers["electric-offset"]
        until(lambda: backends(items) == 0)
        items.execute("INSERT INTO items VALUES (6, 60)")
        live = get(base, table="items", handle=handle, offset=offset, live="true")
        assert live.status_code == 200, live.text
        assert rows(live) == {6: 60}
        # Idle again; a new shape is made on reopened connections, as any other.
        until(lambda: backends(items) == 0)
        other = get(base, table="items", offset="-1", where="n >= 20")
        assert other.status_code == 200, other.text
        assert set(rows(other)) == {1, 2, 6}
        health = httpx.get(f"{base}/v1/health").json()
        assert health["status"] == "active"
        until(lambda: backends(items) == 0)
        assert server.stop()  # a clean stop while idle
    finally:
        server.kill()


def test_idle_close_drops_a_temporary_slot_and_the_next_request_refetches(
    database_url: str, items: Conn, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = ServeProcess.on(
        database_url,
        port,
        tmp_path / "s",
        "--temporary-slot",
        "--replication-idle-timeout",
        "300ms",
        long_poll_timeout=1,
    )
    try:
        first = get(base, table="items", offset="-1")
        handle, offset = first.headers["electric-handle"], first.headers["electric-offset"]
        until(lambda: backends(items) == 0)
        assert slots(items) == []  # went with the connection: nothing holds WAL
        items.execute("INSERT INTO items VALUES (8, 80)")  # no slot sees this
        old = get(base, table="items", handle=handle, offset=offset, live="true")
        assert old.status_code == 409, old.text
        fresh = get(base, table="items", offset="-1")
        assert fresh.headers["electric-handle"] not in (handle, None)
        assert rows(fresh) == {1: 10, 2: 20, 8: 80}
    finally:
        server.kill()


def test_a_waiting_live_request_keeps_the_connections_open(
    database_url: str, items: Conn, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = ServeProcess.on(
        database_url,
        port,
        tmp_path / "s",
        "--replication-idle-timeout",
        "300ms",
        long_poll_timeout=3,
    )
    try:
        first = get(base, table="items", offset="-1")
        handle, offset = first.headers["electric-handle"], first.headers["electric-offset"]
        until(lambda: backends(items) == 0)
        # This request wakes the engine and waits: meanwhile nothing closes, so the
        # change written during its wait reaches it at once.
        with httpx.Client(timeout=30) as client:
            got: list[httpx.Response] = []
            waiter = threading.Thread(
                target=lambda: got.append(
                    client.get(
                        f"{base}/v1/shape",
                        params={
                            "table": "items",
                            "handle": handle,
                            "offset": offset,
                            "live": "true",
                        },
                    )
                )
            )
            waiter.start()
            until(lambda: backends(items) > 0)
            time.sleep(1.0)  # more than the timeout
            assert slots(items) == [("pysync", False, True)]
            started = time.monotonic()
            items.execute("INSERT INTO items VALUES (4, 40)")
            waiter.join(10)
            assert got and got[0].status_code == 200
            assert set(rows(got[0])) == {4}
            assert time.monotonic() - started < 1.5  # not after the 3 s long-poll timeout
    finally:
        server.kill()


async def test_an_embedded_sync_closes_idle_connections_but_not_under_a_live_request(
    database_url: str, items: Conn
) -> None:
    sync = pysync.Sync(
        database_url, in_memory=True, env=False, replication_idle_timeout=0.3, long_poll_timeout=3
    )
    app = Starlette(routes=[sync.mount("/electric")])
    async with (
        sync,
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http,
    ):

        async def eventually(check: Any) -> None:
            await asyncio.to_thread(until, check)

        url, query = "/electric/v1/shape", {"table": "items"}
        first = await http.get(url, params={**query, "offset": "-1"})
        handle, offset = first.headers["electric-handle"], first.headers["electric-offset"]
        await eventually(lambda: backends(items) == 0)
        live = asyncio.ensure_future(
            http.get(url, params={**query, "handle": handle, "offset": offset, "live": "true"})
        )
        await eventually(lambda: walsender(items) is not None)
        await asyncio.sleep(1.0)  # more than the timeout, the request waiting meanwhile
        assert walsender(items) is not None
        await asyncio.to_thread(items.execute, "INSERT INTO items VALUES (7, 70)")
        response = await asyncio.wait_for(live, 2)  # before the long-poll's 3 s
        assert response.status_code == 200 and rows(response) == {7: 70}
        await eventually(lambda: backends(items) == 0)


# -- settings -------------------------------------------------------------------------


def test_durations_read_as_electric_and_pysync_write_them() -> None:
    assert duration("30s") == 30 and duration("5min") == 300 and duration("500ms") == 0.5
    assert duration("2") == 2 and duration("1.5 sec") == 1.5
    assert (
        make_settings(
            from_env({"ELECTRIC_REPLICATION_IDLE_TIMEOUT": "30000"})
        ).replication_idle_timeout
        == 30
    )
    assert (
        make_settings(
            from_env({"ELECTRIC_REPLICATION_IDLE_TIMEOUT": "1m"})
        ).replication_idle_timeout
        == 60
    )
    assert (
        make_settings(from_env({"PYSYNC_REPLICATION_IDLE_TIMEOUT": "2"})).replication_idle_timeout
        == 2
    )
    with pytest.raises(SettingsError, match="^invalid ELECTRIC_REPLICATION_IDLE_TIMEOUT '5 hours'"):
        env = {"ELECTRIC_REPLICATION_IDLE_TIMEOUT": "5 hours"}
        make_settings(from_env(env), env_origins(env))
    with pytest.raises(SettingsError, match="HTTP workers"):
        make_settings({"replication_idle_timeout": "1", "workers": 2})
    with pytest.raises(SettingsError, match="random slot name"):
        make_settings({"slot": "s" * 50, "random_slot_name": True, "temporary_slot": True})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--replication-idle-timeout", "-1"],
            "pysync: invalid --replication-idle-timeout '-1': expected a duration of 0 (off) or "
            "more such as 30s, 500ms or 2min (a bare number is seconds)",
        ),
        (
            ["--replication-idle-timeout", "1", "--workers", "2"],
            "pysync: --replication-idle-timeout cannot be used with HTTP workers (--workers)",
        ),
    ],
)
def test_bad_values_are_one_line(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pysync.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(message), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
