"""The Python client on shapes with ``IN (SELECT ...)`` against ``pysync serve``: a
users -> memberships -> projects -> todos chain followed live, and the restart rule (such
shapes are dropped on restart, as in Electric 1.7.10: every client refetches, none keeps
stale rows), after a clean stop and after SIGKILL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine_runner import poll
from pysync.client import Backoff, Client, Shape
from pysync.postgres.cluster import PostgresCluster, free_port
from pysync.testing import drop_database
from serve_process import ServeProcess

SCHEMA = """
CREATE TABLE teams (id int PRIMARY KEY, name text);
CREATE TABLE team_members (user_id int, team_id int, PRIMARY KEY (user_id, team_id));
CREATE TABLE projects (id int PRIMARY KEY, team_id int, name text);
CREATE TABLE memberships (user_id int, project_id int, PRIMARY KEY (user_id, project_id));
CREATE TABLE todos (id int PRIMARY KEY, project_id int, title text, done bool NOT NULL DEFAULT false);
INSERT INTO teams VALUES (1, 'a'), (2, 'b');
INSERT INTO team_members VALUES (1, 1);
INSERT INTO projects SELECT g, 1 + g % 2, 'p' || g FROM generate_series(1, 6) g;
INSERT INTO memberships VALUES (1, 1), (2, 2);
INSERT INTO todos SELECT g, 1 + g % 6, 't' || g, false FROM generate_series(1, 30) g;
"""
DIRECT = "project_id IN (SELECT project_id FROM memberships WHERE user_id = $1)"
NESTED = (
    "project_id IN (SELECT id FROM projects WHERE team_id IN "
    "(SELECT team_id FROM team_members WHERE user_id = $1))"
)

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def database(pg_cluster: PostgresCluster) -> Iterator[str]:
    name = f"sq_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = pg_cluster.url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
    try:
        yield url
    finally:
        drop_database(pg_cluster, name)


def serve(url: str, storage: Path, port: int, workers: str = "0") -> ServeProcess:
    return ServeProcess.on(url, port, storage, "--workers", workers)


def expected(conn: Conn, where: str) -> set[int]:
    return {r[0] for r in conn.execute(f"SELECT id FROM todos WHERE {where.replace('$1', '1')}")}


def ids(shape: Shape) -> set[int]:
    return {row["id"] for row in shape.rows.values()}


async def converge(shape: Shape, conn: Conn, where: str, timeout: float = 30) -> None:
    """Until the client's rows equal the query (they are only ever read at up-to-date)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while ids(shape) != expected(conn, where):
        if loop.time() > deadline:
            raise AssertionError(
                f"rows {sorted(ids(shape))} != query {sorted(expected(conn, where))}"
            )
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("workers", ["0", "2"], ids=["one-process", "workers"])
async def test_client_follows_moves(database: str, tmp_path: Path, workers: str) -> None:
    port = free_port()
    server = serve(database, tmp_path / "storage", port, workers)
    try:
        async with Client(
            f"http://127.0.0.1:{port}", backoff=Backoff(initial=0.05, maximum=0.5)
        ) as client:
            direct = await client.shape("todos", where=DIRECT, params=["1"], timeout=60)
            nested = await client.shape("todos", where=NESTED, params=["1"], timeout=60)
            with psycopg.connect(database, autocommit=True) as conn:
                for shape, where in ((direct, DIRECT), (nested, NESTED)):
                    await converge(shape, conn, where)
                steps = [
                    "INSERT INTO memberships VALUES (1, 3)",  # todos of project 3 move in
                    "DELETE FROM memberships WHERE user_id = 1 AND project_id = 1",  # out
                    "INSERT INTO team_members VALUES (1, 2)",  # every project of team 2 moves in
                    "UPDATE projects SET team_id = 1 WHERE id = 2",
                    "DELETE FROM team_members WHERE user_id = 1 AND team_id = 1",
                    "UPDATE todos SET project_id = 3 WHERE id = 1",
                    "INSERT INTO todos VALUES (100, 3, 'new', false)",
                ]
                for step in steps:
                    conn.execute(step)
                    for shape, where in ((direct, DIRECT), (nested, NESTED)):
                        await converge(shape, conn, where)
            await direct.close()
            await nested.close()
    finally:
        server.stop()


@pytest.mark.parametrize("kill", [False, True])
async def test_restart_drops_subquery_shapes(database: str, tmp_path: Path, kill: bool) -> None:
    port = free_port()
    storage = tmp_path / "storage"
    server = serve(database, storage, port)
    async with Client(
        f"http://127.0.0.1:{port}", backoff=Backoff(initial=0.05, maximum=0.5)
    ) as client:
        shape = await client.shape("todos", where=DIRECT, params=["1"], timeout=60)
        plain = await client.shape("todos", where="project_id = 1", timeout=60)
        with psycopg.connect(database, autocommit=True) as conn:
            await converge(shape, conn, DIRECT)
            before_handle, plain_handle = shape.handle, plain.handle
            # A shape is served once its snapshot is in its log, and recorded in the
            # registry just after (its log fsynced first): a SIGKILL in between loses it
            # (its clients refetch). This test is about recorded shapes.
            registry = storage / "registry.jsonl"
            assert plain_handle is not None
            await poll(
                lambda: registry.exists() and plain_handle in registry.read_text(),
                30,
                "the plain shape to be recorded",
            )
            if kill:
                server.kill()
            else:
                server.stop()
            # While pysync is down the membership and the todos change: a client that kept
            # its rows (or a server that kept the shape with a stale view) would be wrong.
            conn.execute("INSERT INTO memberships VALUES (1, 4)")
            conn.execute("UPDATE todos SET title = 'changed' WHERE project_id = 1")
            server = serve(database, storage, port)
            try:
                await converge(shape, conn, DIRECT, timeout=60)
                assert shape.handle != before_handle  # refetched: a new shape
                titles = {row["title"] for row in shape.rows.values() if row["project_id"] == 1}
                assert titles == {"changed"}
                await asyncio.sleep(0.5)
                assert plain.handle == plain_handle  # a plain shape is recovered as before
            finally:
                await shape.close()
                await plain.close()
                server.stop()
