"""Catalog work and snapshots through PgBouncer in transaction pooling mode
(``--pooled-database-url``), replication on the database's own URL: Debian's pgbouncer,
started by the test, with fewer server connections than pysync has sessions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine_runner import table_state
from follower import Follower, converge
from pgbouncer_process import PgBouncer
from pysync import Writer
from pysync.log.log import ShapeLog
from pysync.log.memory_storage import MemoryStorage
from pysync.postgres.cluster import PostgresCluster, free_port
from pysync.postgres.connections import Connections
from pysync.postgres.session import DISPLAY_SETTINGS, display_options
from pysync.postgres.snapshot import imported_snapshot, snapshot_transaction
from pysync.shapes import snapshotter
from pysync.shapes.definition import ShapeDefinition, validate
from pysync.shapes.snapshotter import snapshot_end, write_snapshot
from serve_process import ServeProcess
from test_snapshot_encoding import expected_messages, log_chunks, messages_of

Conn = psycopg.Connection[tuple[Any, ...]]
POOL_SIZE = 2
"""PgBouncer's server connections per database: fewer than pysync's sessions."""

ITEMS = ["id", "grp", "at", "blob", "ratio", "span"]
CHILD = ["id", "parent_id", "note"]
ACTIVE_CHILDREN = "parent_id IN (SELECT id FROM parent WHERE active)"


@pytest.fixture
def bouncer(pg_cluster: PostgresCluster) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(pg_cluster, pool_size=POOL_SIZE)
    yield bouncer
    bouncer.stop()


@pytest.fixture
def shown(database_url: str) -> Iterator[Conn]:
    """A direct session formatting values as pysync's (for what clients should hold)."""
    with psycopg.connect(database_url, autocommit=True, options=display_options()) as conn:
        yield conn


@pytest.fixture
async def followers() -> AsyncIterator[list[Follower]]:
    started: list[Follower] = []
    yield started
    for follower in started:
        await follower.close()


def _dbname(database_url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(database_url)["dbname"])


def _odd_display_defaults(conn: Conn, dbname: str) -> None:
    """Server sessions of the database format values otherwise than pysync does: what a
    snapshot sends is right only if its transaction set pysync's settings itself."""
    for name, value in {
        "TimeZone": "Asia/Kolkata",
        "DateStyle": "SQL, MDY",
        "IntervalStyle": "postgres_verbose",
        "bytea_output": "escape",
        "extra_float_digits": "0",
    }.items():
        conn.execute(f"ALTER DATABASE \"{dbname}\" SET {name} = '{value}'")  # test-owned


def _servers(bouncer: PgBouncer, dbname: str) -> list[dict[str, Any]]:
    return [s for s in bouncer.show("SERVERS") if s["database"] == dbname]


async def test_pooled_sessions_through_pgbouncer(
    database_url: str, conn: Conn, bouncer: PgBouncer
) -> None:
    """40 snapshot transactions at once on 6 pysync sessions over 2 server connections:
    each one has pysync's settings, none trips over a prepared statement."""
    dbname = _dbname(database_url)
    _odd_display_defaults(conn, dbname)
    # A direct session's settings travel as the ``options`` start-up parameter, which
    # PgBouncer refuses.
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        await psycopg.AsyncConnection.connect(bouncer.url(dbname), options=display_options())
    connections = Connections(bouncer.url(dbname), pooled=True, snapshots=6, lock_timeout=0.7)
    await connections.open()
    names = [*DISPLAY_SETTINGS, "lock_timeout"]
    query = "SELECT " + ", ".join(f"current_setting('{n}')" for n in names)
    query += ", '2024-01-02 03:04:05+00'::timestamptz::text, '\\x01ff'::bytea::text"

    async def snapshot() -> tuple[str, ...]:
        async with (
            connections.snapshot_session() as session,
            snapshot_transaction(session) as info,
        ):
            assert info.lsn > 0
            # The same statement again and again: psycopg would prepare it (by name, on
            # one server connection) after 5 executions.
            cursor = await session.execute(query, prepare=None)
            row = await cursor.fetchone()
            assert row is not None
            return tuple(v.decode() for v in row)

    try:
        rows = await asyncio.gather(*(snapshot() for _ in range(40)))
        async with connections.catalog_session() as session:
            cursor = await session.execute("SELECT current_setting('statement_timeout')")
            assert await cursor.fetchone() == ("30s",)
    finally:
        await connections.close()
    expected = (
        "hex",
        "ISO, DMY",
        "UTC",
        "1",
        "iso_8601",
        "700ms",
        "2024-01-02 03:04:05+00",
        "\\x01ff",
    )
    assert set(rows) == {expected}
    servers = _servers(bouncer, dbname)
    assert 0 < len(servers) <= POOL_SIZE, servers


async def test_a_two_session_snapshot_through_pgbouncer(
    database_url: str, conn: Conn, bouncer: PgBouncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole table read by two pooled sessions (two transactions on PgBouncer's two
    server connections): the second imports the first's snapshot, then sets pysync's
    settings; the messages are those of a direct session."""
    dbname = _dbname(database_url)
    _odd_display_defaults(conn, dbname)
    conn.execute("CREATE TABLE wide (id int PRIMARY KEY, at timestamptz, b bytea, f float8)")
    conn.execute(
        "INSERT INTO wide SELECT g, timestamptz '2024-01-01 00:00+00' + g * interval '1 minute',"
        " decode(md5(g::text), 'hex'), g / 7.0 FROM generate_series(1, 5000) g"
    )
    monkeypatch.setattr(snapshotter, "PARALLEL_BLOCKS", 1)
    monkeypatch.setattr(snapshotter.BlockRanges, "RANGE_BYTES", 20_000)
    imported = 0
    real = imported_snapshot

    @asynccontextmanager
    async def counted(*args: Any) -> AsyncIterator[None]:
        nonlocal imported
        imported += 1
        async with real(*args):
            yield

    monkeypatch.setattr(snapshotter, "imported_snapshot", counted)
    shape = validate(conn, ShapeDefinition.create("wide"))
    log = ShapeLog(MemoryStorage(), chunk_bytes=20_000)
    pooled = Connections(bouncer.url(dbname), pooled=True, snapshots=2)
    direct = Connections(database_url, snapshots=1)
    await pooled.open()
    await direct.open()
    try:
        async with pooled.snapshot_session() as session:
            info = await write_snapshot(session, shape, log, helper=pooled.spare_snapshot_session)
        async with direct.snapshot_session() as session:
            expected = await expected_messages(session, shape)
    finally:
        await pooled.close()
        await direct.close()
    assert imported == 1
    chunks = log_chunks(log)
    end = b"," + snapshot_end(info)
    assert chunks[-1].endswith(end) and len(chunks) > 10
    got = [m for chunk in [*chunks[:-1], chunks[-1][: -len(end)]] for m in messages_of(chunk)]
    assert b'"2024-01-01 00:01:00+00"' in expected[0] and b'"\\\\x' in expected[0]
    assert sorted(got) == sorted(expected)


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("elsewhere", "does not lead to the database replication reads"),
        ("nowhere", "cannot use the pooled database URL (127.0.0.1:"),
    ],
)
async def test_a_pooled_url_that_does_not_work_stops_the_start(
    where: str,
    reason: str,
    database_url: str,
    pg_cluster: PostgresCluster,
    bouncer: PgBouncer,
    tmp_path: Path,
) -> None:
    """A pooled URL that leads to another database would give snapshots that do not
    match the stream; one that does not work would fail every shape: pysync does not
    start, and says which URL is wrong."""
    pooled = bouncer.url("postgres")
    if where == "nowhere":
        pooled = pooled.replace(f":{bouncer.port}/", f":{free_port()}/")
    server = ServeProcess(
        [
            "--database-url",
            database_url,
            "--port",
            str(free_port()),
            "--storage-dir",
            str(tmp_path / "storage"),
        ],
        {"PYSYNC_POOLED_DATABASE_URL": pooled},
    )
    assert server.wait_exit(60) == 1, server.output()
    last = server.lines[-1]
    assert last.startswith("pysync: ") and reason in last, server.output()
    assert pg_cluster.password not in server.output()


async def test_serve_snapshots_subsets_and_subqueries_through_pgbouncer(
    database_url: str,
    conn: Conn,
    shown: Conn,
    bouncer: PgBouncer,
    followers: list[Follower],
    tmp_path: Path,
) -> None:
    dbname = _dbname(database_url)
    _odd_display_defaults(conn, dbname)
    conn.execute(
        "CREATE TABLE items (id int PRIMARY KEY, grp int, at timestamptz, blob bytea,"
        " ratio float8, span interval)"
    )
    conn.execute(
        "INSERT INTO items SELECT g, g % 8, '2024-03-01 12:00+00'::timestamptz + g * interval "
        "'1 hour 7 minutes', decode(md5(g::text), 'hex'), g / 3.0, g * interval '1 day 2 hours'"
        " FROM generate_series(1, 400) g"
    )
    conn.execute("CREATE TABLE parent (id int PRIMARY KEY, active bool)")
    conn.execute("INSERT INTO parent SELECT g, g % 2 = 0 FROM generate_series(1, 20) g")
    conn.execute("CREATE TABLE child (id int PRIMARY KEY, parent_id int, note text)")
    conn.execute("INSERT INTO child SELECT g, g % 20 + 1, 'n' || g FROM generate_series(1, 200) g")
    port = free_port()
    server = ServeProcess.on(
        database_url,
        port,
        tmp_path / "storage",
        "--snapshot-connections",
        "6",
        "--log-level",
        "info",  # its "shutdown complete"
        env={"PYSYNC_POOLED_DATABASE_URL": bouncer.url(dbname)},
    )
    base = f"http://127.0.0.1:{port}/v1/shape"
    shapes: list[dict[str, str]] = [{"table": "items"}, {"table": "child"}]
    shapes += [{"table": "items", "where": f"grp = {g}"} for g in range(8)]
    shapes += [{"table": "child", "where": ACTIVE_CHILDREN}]
    shapes += [
        {"table": "items", "where": f"id > {n * 50}", "columns": "id,at,span"} for n in (1, 5)
    ]

    def expected(follower: Follower) -> dict[str, dict[str, Any]]:
        params = follower.params
        table = params["table"]
        columns = params["columns"].split(",") if "columns" in params else None
        state = table_state(
            shown,
            "public",
            table,
            ITEMS if table == "items" else CHILD,
            ["id"],
            params.get("where"),
        )
        if columns is None:
            return state
        return {key: {c: row[c] for c in columns} for key, row in state.items()}

    async def subset(http: httpx.AsyncClient, handle: str, grp: int) -> None:
        response = await http.get(
            base,
            params={
                "table": "items",
                "offset": "-1",
                "log": "changes_only",
                "handle": handle,
                "subset__where": "grp = $1",
                "subset__params": f'{{"1": "{grp}"}}',
                "subset__order_by": "id",
            },
        )
        assert response.status_code == 200, response.text
        got = [row["value"] for row in response.json()["data"]]
        assert got == list(
            table_state(shown, "public", "items", ITEMS, ["id"], f"grp = {grp}").values()
        )

    try:
        # More shapes and subsets at once than pysync has sessions and PgBouncer servers.
        started = [Follower(base, params).start() for params in shapes]
        followers.extend(started)
        await converge(started, expected, what="initial sync")
        async with httpx.AsyncClient(timeout=30) as http:
            first = await http.get(
                base, params={"table": "items", "offset": "-1", "log": "changes_only"}
            )
            assert first.status_code == 200, first.text
            handle = first.headers["electric-handle"]
            await asyncio.gather(*(subset(http, handle, grp % 8) for grp in range(16)))

        conn.execute("UPDATE items SET grp = (grp + 1) % 8, span = span * 2 WHERE id % 7 = 0")
        conn.execute("DELETE FROM items WHERE id % 11 = 0")
        conn.execute(
            "INSERT INTO items SELECT g, g % 8, now(), '\\x00'::bytea, 0.1, '1 s' FROM generate_series(401, 430) g"
        )
        # Parents becoming active move their children in: a move-in query, through PgBouncer.
        # (Not the other way: the test's client does not apply move-out tags.)
        conn.execute("UPDATE parent SET active = true WHERE id <= 6")
        conn.execute("UPDATE child SET parent_id = 2 WHERE id % 13 = 0")
        await converge(started, expected, what="live changes")
        # And new clients of existing shapes, and shapes made now.
        late = [Follower(base, params).start() for params in shapes[:4]]
        late += [Follower(base, {"table": "items", "where": "grp = 3 AND ratio > 20"}).start()]
        followers.extend(late)
        await converge(late, expected, what="later shapes")
        for follower in [*started, *late]:
            follower.check()
            assert follower.refetches == 0, (follower.name, dict(follower.statuses))

        # Every session pysync has on the database is one of PgBouncer's server
        # connections (replication aside): snapshots went through it, on 2 connections.
        servers = _servers(bouncer, dbname)
        assert 0 < len(servers) <= POOL_SIZE, servers
        backends = {
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND pid <> %s",
                (shown.info.backend_pid,),
            ).fetchall()
        }
        assert backends <= {s["remote_pid"] for s in servers}, (backends, servers)
        stats = next(s for s in bouncer.show("STATS") if s["database"] == dbname)
        assert stats["total_xact_count"] >= len(shapes) + 16, stats
        # Replication, on the database's own URL (PgBouncer does not pass it).
        slot = conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'pysync'"
            " AND database = current_database()"
        ).fetchone()
        assert slot == (True,)
    finally:
        output = server.output()
        assert server.stop(), output
    for bad in ("prepared statement", "startup parameter", " failed:"):
        assert bad not in output, output


async def test_writer_through_pgbouncer(database_url: str, conn: Conn, bouncer: PgBouncer) -> None:
    """``Writer(database_url=...)`` on a pooler: requests one after the other (a new
    session each, on the same 2 server connections) with batches repeating a statement."""
    conn.execute("CREATE TABLE todos (id int PRIMARY KEY, title text NOT NULL)")
    writer = Writer(database_url=bouncer.url(_dbname(database_url))).allow("todos")

    async def mutate(request: Request) -> Response:
        return await writer.handle(request)

    app = Starlette(routes=[Route("/api/mutations", mutate, methods=["POST"])])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://app.test"
    ) as client:
        for batch in range(6):
            mutations = [
                {
                    "type": "insert",
                    "modified": {"id": batch * 10 + n, "title": f"t{n}"},
                    "syncMetadata": {"relation": ["public", "todos"]},
                }
                for n in range(8)
            ]
            response = await client.post("/api/mutations", json=mutations)
            assert response.status_code == 200, response.text
            row = conn.execute(
                "SELECT DISTINCT xmin::text FROM todos WHERE id / 10 = %s", (batch,)
            ).fetchall()
            assert [int(r[0]) for r in row] == [response.json()["txid"]]
    assert conn.execute("SELECT count(*) FROM todos").fetchone() == (48,)


async def test_workers_query_subsets_through_pgbouncer(
    database_url: str, conn: Conn, bouncer: PgBouncer, tmp_path: Path
) -> None:
    """With ``--workers``, a worker runs subset queries itself: on the pooled URL too."""
    dbname = _dbname(database_url)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, grp int)")
    conn.execute("INSERT INTO items SELECT g, g % 4 FROM generate_series(1, 100) g")
    port = free_port()
    server = ServeProcess.on(
        database_url,
        port,
        tmp_path / "storage",
        "--workers",
        "1",
        "--pooled-database-url",
        bouncer.url(dbname),
        "--log-level",
        "info",
    )
    base = f"http://127.0.0.1:{port}/v1/shape"
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            shape = {"table": "items", "offset": "-1", "log": "changes_only"}
            first = await http.get(base, params=shape)
            assert first.status_code == 200, first.text
            for grp in range(4):
                response = await http.get(
                    base,
                    params={
                        **shape,
                        "handle": first.headers["electric-handle"],
                        "subset__where": "grp = $1",
                        "subset__params": f'{{"1": "{grp}"}}',
                        "subset__order_by": "id",
                    },
                )
                assert response.status_code == 200, response.text
                ids = [int(row["value"]["id"]) for row in response.json()["data"]]
                assert ids == [g for g in range(1, 101) if g % 4 == grp]
        servers = _servers(bouncer, dbname)
        backends = {
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchall()
        }
        assert backends and backends <= {s["remote_pid"] for s in servers}, (backends, servers)
    finally:
        output = server.output()
        assert server.stop(), output
    assert "prepared statement" not in output and " failed:" not in output, output
