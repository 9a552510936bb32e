"""Shapes with ``IN (SELECT ...)`` on a running engine: snapshots, move-ins and move-outs,
checked by applying the log as a client does against the same query in Postgres."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine_runner import Conn, poll, quiesce, read_all, table_state
from pysync.engine import Engine
from pysync.shapes.consumer import LIVE, ShapeConsumer
from pysync.shapes.definition import ShapeDefinition
from pysync.shapes.subqueries.dependency import DependencyState
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


async def settle(
    engine: Engine, conn: Conn, shapes: list[ShapeConsumer], timeout: float = 30
) -> None:
    """Until every transaction so far is processed and no move-in is pending: no
    dependency is being read again (a nested subquery's inner query finishing is what
    starts the outer shapes' move-ins) and every shape is steady."""
    await quiesce(engine, conn, timeout)
    dependencies = engine.registry.subqueries.by_key
    await poll(
        lambda: (
            all(d.state is DependencyState.LIVE for d in dependencies.values())
            and all(
                s.gone
                or (
                    s.subquery is not None
                    and s.subquery.move is None
                    and s.subquery.phase.value == "steady"
                )
                for s in shapes
            )
        ),
        timeout,
        "move-ins to be spliced",
    )


def client_rows(live: ShapeConsumer) -> dict[str, dict[str, Any]]:
    client = TaggedClient()
    client.apply_all(read_all(live.log))
    return client.rows


def check(
    conn: Conn,
    live: ShapeConsumer,
    where: str,
    table: str = "todos",
    columns: list[str] | None = None,
) -> None:
    assert not live.gone, live.reason
    expected = table_state(conn, "public", table, columns or TODO_COLUMNS, ["id"], where)
    got = client_rows(live)
    assert got == expected, (
        f"missing {sorted(set(expected) - set(got))[:5]} extra {sorted(set(got) - set(expected))[:5]}"
    )


async def test_move_in_and_move_out(engine: Engine, db: Conn) -> None:
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


class PausedMoveIns:
    """Holds every move-in query's result until released: transactions committed
    meanwhile reach the shape while its move-in is not spliced yet."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import pysync.shapes.subqueries.manager as subqueries
        from pysync.shapes.snapshotter import query_move_in as real

        self.release = asyncio.Event()
        self.queried = 0

        async def paused(*args: Any, **kwargs: Any) -> Any:
            result = await real(*args, **kwargs)
            self.queried += 1
            await self.release.wait()
            return result

        monkeypatch.setattr(subqueries, "query_move_in", paused)


async def test_transactions_racing_a_move_in_query(
    engine: Engine, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused = PausedMoveIns(monkeypatch)
    where = "project_id IN (SELECT project_id FROM memberships WHERE user_id = 1)"
    live = await engine.shape(ShapeDefinition.create("todos", where=where))
    await wait_live(live)
    db.execute("INSERT INTO memberships VALUES (1, 3)")
    await poll(lambda: paused.queried == 1, 30, "the move-in query")
    # committed after the query's snapshot: the shape buffers them, and they come
    # after the move-in rows, converted with the new view
    db.execute("UPDATE todos SET title = 'after' WHERE project_id = 3 AND id < 50")
    db.execute("INSERT INTO todos VALUES (200, 3, 'new', false), (201, 2, 'new', false)")
    db.execute("DELETE FROM todos WHERE id = 13")  # project 3
    db.execute("UPDATE todos SET project_id = 3 WHERE id = 1")  # 2 -> 3: both in
    db.execute("UPDATE todos SET project_id = 4 WHERE id = 23")  # 3 -> 4: out
    await quiesce(engine, db)
    paused.release.set()
    await settle(engine, db, [live])
    check(db, live, where)


async def test_value_leaves_and_returns_before_the_move_in_is_spliced(
    engine: Engine, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused = PausedMoveIns(monkeypatch)
    where = "project_id IN (SELECT project_id FROM memberships WHERE user_id = 1)"
    live = await engine.shape(ShapeDefinition.create("todos", where=where))
    await wait_live(live)
    db.execute("INSERT INTO memberships VALUES (1, 3)")
    await poll(lambda: paused.queried == 1, 30, "the move-in query")
    db.execute("DELETE FROM memberships WHERE user_id = 1 AND project_id = 3")  # leaves...
    db.execute("UPDATE todos SET title = 'meanwhile' WHERE project_id = 3")
    db.execute("INSERT INTO memberships VALUES (1, 3)")  # ...and returns
    db.execute("DELETE FROM memberships WHERE user_id = 1 AND project_id = 2")  # another leaves
    await quiesce(engine, db)
    paused.release.set()
    await settle(engine, db, [live])
    check(db, live, where)
    # and once more, ending outside
    db.execute("INSERT INTO memberships VALUES (1, 5)")
    await poll(lambda: paused.queried == 2, 30, "the second move-in query")
    db.execute("DELETE FROM memberships WHERE user_id = 1 AND project_id = 5")
    await settle(engine, db, [live])
    check(db, live, where)


async def test_dependency_and_outer_changes_in_one_transaction(engine: Engine, db: Conn) -> None:
    where = "project_id IN (SELECT project_id FROM memberships WHERE user_id = 1)"
    live = await engine.shape(ShapeDefinition.create("todos", where=where))
    await wait_live(live)
    with db.transaction():
        db.execute("INSERT INTO memberships VALUES (1, 3)")
        db.execute("INSERT INTO todos VALUES (300, 3, 'with the membership', false)")
        db.execute("UPDATE todos SET title = 'same txn' WHERE project_id = 3")
        db.execute("DELETE FROM memberships WHERE user_id = 1 AND project_id = 1")
        db.execute("UPDATE todos SET title = 'leaving' WHERE project_id = 1")
    await settle(engine, db, [live])
    check(db, live, where)
    entries = read_all(live.log)
    inserted = [e for e in entries if e.get("key") == '"public"."todos"/"300"']
    assert len(inserted) == 1 and inserted[0]["headers"].get("is_move_in")


async def test_nested_and_shared_dependencies(engine: Engine, db: Conn) -> None:
    nested = (
        "project_id IN (SELECT id FROM projects WHERE team_id IN "
        "(SELECT team_id FROM team_members WHERE user_id = $1))"
    )
    a = await engine.shape(ShapeDefinition.create("todos", where=nested, params=["1"]))
    b = await engine.shape(
        ShapeDefinition.create("todos", where=nested, params=["1"], columns=["id", "project_id"])
    )
    c = await engine.shape(ShapeDefinition.create("todos", where=nested, params=["2"]))
    for live in (a, b, c):
        await wait_live(live)
    subqueries = engine.registry.subqueries
    assert len(subqueries) == 4  # projects and team_members, per user; shared by a and b
    for step in (
        "INSERT INTO team_members VALUES (1, 2)",
        "UPDATE projects SET team_id = 3 WHERE id = 1",
        "DELETE FROM team_members WHERE user_id = 1 AND team_id = 1",
        "UPDATE projects SET team_id = 2 WHERE id = 5",
    ):
        db.execute(step)
        await settle(engine, db, [a, b, c])
        for live, user in ((a, "1"), (c, "2")):
            check(db, live, nested.replace("$1", user))
        check(db, b, nested.replace("$1", "1"), columns=["id", "project_id"])
    await engine.delete(c.handle)
    assert len(subqueries) == 2  # user 2's dependencies went with its only shape


async def test_truncating_a_dependency_table_resyncs_its_shapes(engine: Engine, db: Conn) -> None:
    where = "project_id IN (SELECT project_id FROM memberships WHERE user_id = 1)"
    live = await engine.shape(ShapeDefinition.create("todos", where=where))
    await wait_live(live)
    db.execute("TRUNCATE memberships")
    await quiesce(engine, db)
    await poll(lambda: live.gone, 10, "the shape to go")
    assert len(engine.registry.subqueries) == 0
    again = await engine.shape(ShapeDefinition.create("todos", where=where))
    await wait_live(again)
    check(db, again, where)


async def test_null_in_a_not_in_subquery(engine: Engine, db: Conn) -> None:
    db.execute("CREATE TABLE blocked (project_id int)")
    db.execute("UPDATE todos SET project_id = NULL WHERE id % 7 = 0")
    where = "project_id NOT IN (SELECT project_id FROM blocked)"
    live = await engine.shape(ShapeDefinition.create("todos", where=where))
    await wait_live(live)
    check(db, live, where)  # an empty NOT IN holds for NULL too
    db.execute("INSERT INTO blocked VALUES (1)")  # rows of project 1 and with NULL leave
    await settle(engine, db, [live])
    check(db, live, where)
    db.execute("DELETE FROM blocked")  # they come back
    await settle(engine, db, [live])
    check(db, live, where)
    db.execute("INSERT INTO blocked VALUES (NULL)")  # NOT IN is never true now: resync
    await quiesce(engine, db)
    await poll(lambda: live.gone, 10, "the shape to go")
    again = await engine.shape(ShapeDefinition.create("todos", where=where))
    await wait_live(again)
    check(db, again, where)


async def test_dependency_table_without_primary_key(engine: Engine, db: Conn) -> None:
    db.execute("CREATE TABLE follows (user_id int, project_id int)")
    db.execute("INSERT INTO follows VALUES (1, 2), (1, 2), (1, 3)")
    where = "project_id IN (SELECT project_id FROM follows WHERE user_id = 1)"
    live = await engine.shape(ShapeDefinition.create("todos", where=where))
    await wait_live(live)
    check(db, live, where)
    db.execute(
        "DELETE FROM follows WHERE ctid = (SELECT min(ctid) FROM follows WHERE project_id = 2)"
    )
    await settle(engine, db, [live])
    check(db, live, where)  # one copy left: project 2 stays
    db.execute("DELETE FROM follows WHERE project_id = 2")
    db.execute("INSERT INTO follows VALUES (1, 4), (1, 4)")
    db.execute("UPDATE follows SET project_id = 5 WHERE project_id = 4")
    await settle(engine, db, [live])
    check(db, live, where)


NEGATIONS = [
    # Django's exclude() on a nullable foreign key
    "NOT ((project_id IN (SELECT project_id FROM memberships WHERE user_id = $1)) "
    "AND (project_id IS NOT NULL))",
    "NOT (id = 5 OR project_id IN (SELECT project_id FROM memberships WHERE user_id = $1))",
    "NOT (project_id IN (SELECT project_id FROM memberships WHERE user_id = $1) AND NOT done)",
    "NOT NOT (project_id IN (SELECT project_id FROM memberships WHERE user_id = $1) OR done)",
    "NOT (project_id IN (SELECT project_id FROM memberships WHERE user_id = $1)) "
    "OR project_id IN (SELECT id FROM projects WHERE team_id = 2)",
]


@pytest.mark.parametrize("where", NEGATIONS)
@pytest.mark.parametrize("user", ["1", "5"])
async def test_negation_wrapping_more_than_the_sublink(
    engine: Engine, db: Conn, where: str, user: str
) -> None:
    db.execute("UPDATE todos SET project_id = NULL WHERE id % 7 = 0")
    db.execute("UPDATE todos SET done = true WHERE id % 3 = 0")
    live = await engine.shape(ShapeDefinition.create("todos", where=where, params=[user]))
    await wait_live(live)
    sql_where = where.replace("$1", user)
    check(db, live, sql_where)
    steps = [
        f"INSERT INTO memberships VALUES ({user}, 4, 'member')",  # gains a value
        f"INSERT INTO memberships VALUES ({user}, 5, 'member'), ({user}, 6, 'member')",
        f"DELETE FROM memberships WHERE user_id = {user} AND project_id = 4",  # loses one
        f"DELETE FROM memberships WHERE user_id = {user}",  # loses all
        f"INSERT INTO memberships VALUES ({user}, 1, 'member')",
        "UPDATE todos SET project_id = 1 WHERE id = 7",
        f"DELETE FROM memberships WHERE user_id = {user}",
    ]
    for step in steps:
        db.execute(step)
        await settle(engine, db, [live])
        check(db, live, sql_where)


@pytest.mark.parametrize("where", NEGATIONS[:2])
async def test_transactions_racing_a_negated_move_in(
    engine: Engine, db: Conn, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    paused = PausedMoveIns(monkeypatch)
    db.execute("UPDATE todos SET project_id = NULL WHERE id % 7 = 0")
    live = await engine.shape(ShapeDefinition.create("todos", where=where, params=["1"]))
    await wait_live(live)
    sql_where = where.replace("$1", "1")
    db.execute("DELETE FROM memberships WHERE user_id = 1 AND project_id = 2")  # rows enter
    await poll(lambda: paused.queried == 1, 30, "the move-in query")
    db.execute("UPDATE todos SET title = 'after' WHERE project_id = 2 AND id < 50")
    db.execute("INSERT INTO todos VALUES (200, 2, 'new', false), (201, 1, 'new', false)")
    db.execute("DELETE FROM todos WHERE id = 12")  # project 2
    db.execute("UPDATE todos SET project_id = 2 WHERE id = 10")  # 1 -> 2: enters
    db.execute("UPDATE todos SET project_id = 1 WHERE id = 21")  # 2 -> 1: leaves
    db.execute("INSERT INTO memberships VALUES (1, 3)")  # rows leave meanwhile
    db.execute("DELETE FROM memberships WHERE user_id = 1")  # and all enter
    await quiesce(engine, db)
    paused.release.set()
    await settle(engine, db, [live])
    check(db, live, sql_where)
    db.execute("INSERT INTO memberships VALUES (1, 2), (1, 4)")
    await settle(engine, db, [live])
    check(db, live, sql_where)


async def test_null_in_a_subquery_under_a_wider_negation(engine: Engine, db: Conn) -> None:
    """``NOT (x IN S AND x IS NOT NULL)`` with a NULL in S: a row with x NULL is in, through
    ``x IS NULL``; rows with any other x are out (``NOT NULL``) whatever S gains or loses."""
    db.execute("CREATE TABLE blocked (project_id int)")
    db.execute("INSERT INTO blocked VALUES (NULL), (1)")
    db.execute("UPDATE todos SET project_id = NULL WHERE id % 7 = 0")
    where = "NOT ((project_id IN (SELECT project_id FROM blocked)) AND (project_id IS NOT NULL))"
    live = await engine.shape(ShapeDefinition.create("todos", where=where))
    await wait_live(live)
    check(db, live, where)
    for step in (
        "INSERT INTO blocked VALUES (2)",
        "DELETE FROM blocked WHERE project_id = 1",
        "UPDATE todos SET project_id = NULL WHERE id = 3",
        "UPDATE todos SET project_id = 5 WHERE id = 14",
    ):
        db.execute(step)
        await settle(engine, db, [live])
        check(db, live, where)
    db.execute("DELETE FROM blocked WHERE project_id IS NULL")  # rows can enter: resync
    await quiesce(engine, db)
    await poll(lambda: live.gone, 10, "the shape to go")
    again = await engine.shape(ShapeDefinition.create("todos", where=where))
    await wait_live(again)
    check(db, again, where)
    db.execute("DELETE FROM blocked")
    await settle(engine, db, [again])
    check(db, again, where)
