"""Shapes with ``IN (SELECT ...)`` on a running engine: snapshots, move-ins and move-outs,
checked by applying the log as a client does against the same query in Postgres."""

from __future__ import annotations

from typing import Any

import pytest

from engine_runner import Conn, poll, quiesce, read_all, table_state
from pysync.engine import Engine
from pysync.shapes.consumer import LIVE, ShapeConsumer
from pysync.shapes.definition import ShapeDefinition
from subquery_support import TaggedClient

SCHEMA = """
CREATE TABLE users (id int PRIMARY KEY, name text);
CREATE TABLE teams (id int PRIMARY KEY, name text);
CREATE TABLE projects (id int PRIMARY KEY, team_id int, name text, archived bool NOT NULL DEFAULT false);
CREATE TABLE memberships (user_id int, project_id int, role text, PRIMARY KEY (user_id, project_id));
CREATE TABLE team_members (user_id int, team_id int, PRIMARY KEY (user_id, team_id));
CREATE TABLE todos (id int PRIMARY KEY, project_id int, title text, done bool NOT NULL DEFAULT false);
INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 5) g;
INSERT INTO teams SELECT g, 'team ' || g FROM generate_series(1, 3) g;
INSERT INTO projects SELECT g, 1 + g % 3, 'project ' || g FROM generate_series(1, 10) g;
INSERT INTO todos SELECT g, 1 + g % 10, 'todo ' || g FROM generate_series(1, 100) g;
INSERT INTO memberships VALUES (1, 1, 'owner'), (1, 2, 'member'), (2, 2, 'owner'), (2, 3, 'member');
INSERT INTO team_members VALUES (1, 1), (2, 2);
"""
TODO_COLUMNS = ["id", "project_id", "title", "done"]


@pytest.fixture
def db(conn: Conn) -> Conn:
    conn.execute(SCHEMA)
    return conn


async def wait_live(live: ShapeConsumer, timeout: float = 30) -> None:
    await poll(lambda: live.state is LIVE or live.gone, timeout, "the snapshot")
    assert not live.gone, live.reason


async def settle(engine: Engine, conn: Conn, shapes: list[ShapeConsumer], timeout: float = 30) -> None:
    """Until every transaction so far is processed and no move-in is pending."""
    await quiesce(engine, conn, timeout)
    await poll(lambda: all(s.gone or (s.subquery is not None and s.subquery.move is None
                                      and s.subquery.phase.value == "steady") for s in shapes),
               timeout, "move-ins to be spliced")


def client_rows(live: ShapeConsumer) -> dict[str, dict[str, Any]]:
    client = TaggedClient()
    client.apply_all(read_all(live.log))
    return client.rows


def check(conn: Conn, live: ShapeConsumer, where: str, table: str = "todos",
          columns: list[str] | None = None) -> None:
    assert not live.gone, live.reason
    expected = table_state(conn, "public", table, columns or TODO_COLUMNS, ["id"], where)
    got = client_rows(live)
    assert got == expected, (
        f"missing {sorted(set(expected) - set(got))[:5]} extra {sorted(set(got) - set(expected))[:5]}")


async def test_move_in_and_move_out(database_url: str, db: Conn) -> None:
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    try:
        where = "project_id IN (SELECT project_id FROM memberships WHERE user_id = $1)"
        live = await engine.shape(ShapeDefinition.create("todos", where=where, params=["1"]))
        await wait_live(live)
        sql_where = where.replace("$1", "1")
        check(db, live, sql_where)
        entries = read_all(live.log)
        assert all(e["headers"].get("tags") for e in entries if "key" in e)
        db.execute("INSERT INTO memberships VALUES (1, 3, 'member')")
        await settle(engine, db, [live])
        check(db, live, sql_where)
        events = [e for e in read_all(live.log) if "event" in e.get("headers", {})]
        assert events and events[-1]["headers"]["event"] == "move-in"
        db.execute("DELETE FROM memberships WHERE user_id = 1 AND project_id = 1")
        await settle(engine, db, [live])
        check(db, live, sql_where)
        events = [e for e in read_all(live.log) if "event" in e.get("headers", {})]
        assert events[-1]["headers"]["event"] == "move-out"
        db.execute("UPDATE todos SET project_id = 3 WHERE id = 5")
        db.execute("UPDATE todos SET project_id = 1 WHERE id = 6")
        await settle(engine, db, [live])
        check(db, live, sql_where)
    finally:
        await engine.stop()
