"""Randomised model check of shapes with ``IN (SELECT ...)`` against Postgres.

Random transactions write the outer table (todos) and the tables its subqueries read
(memberships, projects, team members): rows moving in and out again and again,
dependency rows deleted and inserted again, primary keys changed, dependency and outer
changes in one transaction; some rounds with concurrent writers while shapes are being
created. After each step every shape's log, applied as a client applies it (tags,
``move-in``/``move-out`` events), must equal ``SELECT ... WHERE`` the same clause.
"""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import psycopg
import pytest

from engine_runner import Conn, poll, quiesce, read_all, table_state
from pysync.engine import Engine
from pysync.log.offset import BEFORE_ALL, LogOffset
from pysync.shapes.consumer import LIVE, ShapeConsumer
from pysync.shapes.definition import ShapeDefinition
from pysync.shapes.subqueries.dependency import DependencyState
from subquery_support import TaggedClient

SCHEMA = """
CREATE TABLE projects (id int PRIMARY KEY, team_id int, archived bool NOT NULL DEFAULT false);
CREATE TABLE memberships (user_id int, project_id int, PRIMARY KEY (user_id, project_id));
CREATE TABLE team_members (user_id int, team_id int, PRIMARY KEY (user_id, team_id));
CREATE TABLE todos (id int PRIMARY KEY, project_id int, assignee int, title text, done bool NOT NULL DEFAULT false);
INSERT INTO projects SELECT g, g % 3, g % 5 = 0 FROM generate_series(1, 8) g;
INSERT INTO memberships SELECT u, p FROM generate_series(1, 3) u, generate_series(1, 8) p WHERE (u + p) % 3 = 0;
INSERT INTO team_members VALUES (1, 0), (2, 1), (3, 2), (1, 2);
INSERT INTO todos SELECT g, CASE WHEN g % 11 = 0 THEN NULL ELSE 1 + g % 8 END, 1 + g % 4, 'todo ' || g, g % 2 = 0
    FROM generate_series(1, 60) g;
"""
COLUMNS = ["id", "project_id", "assignee", "title", "done"]
USERS = (1, 2, 3)
PROJECTS = 8

# (clause, params): every kind of subquery shape
SHAPES: list[tuple[str, list[str]]] = [
    ("project_id IN (SELECT project_id FROM memberships WHERE user_id = $1)", ["1"]),
    ("project_id IN (SELECT project_id FROM memberships WHERE user_id = $1)", ["2"]),
    (
        "project_id IN (SELECT id FROM projects WHERE team_id IN "
        "(SELECT team_id FROM team_members WHERE user_id = $1))",
        ["1"],
    ),
    (
        "project_id IN (SELECT project_id FROM memberships WHERE user_id = $1) AND NOT done "
        "OR title LIKE '%7%'",
        ["3"],
    ),
    ("project_id NOT IN (SELECT id FROM projects WHERE archived)", []),
    ("(project_id, assignee) IN (SELECT project_id, user_id FROM memberships)", []),
    (
        "project_id IN (SELECT project_id FROM memberships WHERE user_id = $1) "
        "OR project_id IN (SELECT id FROM projects WHERE team_id = 2)",
        ["2"],
    ),
    (
        "assignee IN (SELECT user_id FROM team_members WHERE team_id = 2) AND project_id NOT IN "
        "(SELECT id FROM projects WHERE archived)",
        [],
    ),
]


# A negation wrapping more than the sublink: De Morgan gives each sublink its polarity.
MEMBER = "project_id IN (SELECT project_id FROM memberships WHERE user_id = $1)"
NEGATED_SHAPES: list[tuple[str, list[str]]] = [
    (f"NOT (({MEMBER}) AND (project_id IS NOT NULL))", ["1"]),  # Django's exclude()
    (f"NOT (id = 5 OR {MEMBER})", ["2"]),
    (f"NOT ({MEMBER} AND NOT done)", ["3"]),
    (f"NOT ({MEMBER} OR title LIKE '%7%')", ["1"]),
    (f"NOT NOT ({MEMBER} AND done)", ["2"]),
    (f"NOT (NOT ({MEMBER}) OR done)", ["3"]),
    (
        f"NOT ({MEMBER}) OR project_id IN (SELECT id FROM projects WHERE team_id = 2)",
        ["1"],
    ),
    (
        f"NOT ({MEMBER} AND assignee IN (SELECT user_id FROM team_members WHERE team_id = 2))",
        ["2"],
    ),
    # in a subquery's own WHERE, and around a nested subquery
    (
        "project_id IN (SELECT id FROM projects WHERE NOT (team_id IN "
        "(SELECT team_id FROM team_members WHERE user_id = $1) AND team_id IS NOT NULL))",
        ["1"],
    ),
    (
        "NOT (project_id IN (SELECT id FROM projects WHERE NOT (team_id IN "
        "(SELECT team_id FROM team_members WHERE user_id = $1) OR archived)) OR done)",
        ["3"],
    ),
]


def sql_where(clause: str, params: list[str]) -> str:
    for i, value in reversed(list(enumerate(params, 1))):
        clause = clause.replace(f"${i}", value)
    return clause


class Follower:
    """One shape, applied incrementally as a live client applies it."""

    def __init__(
        self, live: ShapeConsumer, clause: str, params: list[str], columns: list[str]
    ) -> None:
        self.live = live
        self.clause = clause
        self.params = params
        self.columns = columns
        self.client = TaggedClient()
        self.offset: LogOffset = BEFORE_ALL

    def catch_up(self) -> None:
        log = self.live.log
        if log.last_offset > self.offset:
            try:
                self.client.apply_all(read_all(log, self.offset))
            except AssertionError as exc:
                key = str(exc).split("'key': '")[1].split("'")[0]
                entries = read_all(log)
                lsn = (
                    str(exc).split("'lsn': '")[1].split("'")[0] if "'lsn': '" in str(exc) else None
                )
                upto = next(
                    (
                        i
                        for i, e in enumerate(entries)
                        if e.get("key") == key and e["headers"].get("lsn") == lsn
                    ),
                    len(entries),
                )
                history = [
                    e
                    for e in entries[: upto + 1]
                    if e.get("key") == key
                    or "event" in e.get("headers", {})
                    or "control" in e.get("headers", {})
                ][-16:]
                pytest.fail(f"{self.clause} {self.params}: {exc}\nhistory of {key}: {history}")
            self.offset = log.last_offset

    def check(self, conn: Conn, step: str) -> None:
        assert not self.live.gone, f"{self.clause}: gone ({self.live.reason}) at {step}"
        self.catch_up()
        expected = table_state(
            conn, "public", "todos", self.columns, ["id"], sql_where(self.clause, self.params)
        )
        got = {k: {c: v.get(c) for c in self.columns} for k, v in self.client.rows.items()}
        if got != expected:
            missing = sorted(set(expected) - set(got))[:5]
            extra = sorted(set(got) - set(expected))[:5]
            wrong = [
                (k, got[k], expected[k]) for k in expected if k in got and got[k] != expected[k]
            ][:3]
            key = (missing or extra or [w[0] for w in wrong])[0]
            entries = read_all(self.live.log)
            history = [
                e for e in entries if e.get("key") == key or "event" in e.get("headers", {})
            ][-12:]
            pytest.fail(
                f"{self.clause} {self.params} diverged at {step}: missing {missing}, "
                f"extra {extra}, wrong {wrong}\nhistory of {key}: {history}"
            )


def random_txn(rng: random.Random) -> list[tuple[str, tuple[Any, ...]]]:
    """One transaction's statements."""
    statements: list[tuple[str, tuple[Any, ...]]] = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        user = rng.choice(USERS)
        project = rng.randint(1, PROJECTS)
        todo = rng.randint(1, 70)
        pick = rng.random()
        if pick < 0.18:
            statements.append(
                ("INSERT INTO memberships VALUES (%s, %s) ON CONFLICT DO NOTHING", (user, project))
            )
        elif pick < 0.32:
            statements.append(
                ("DELETE FROM memberships WHERE user_id = %s AND project_id = %s", (user, project))
            )
        elif pick < 0.37:
            # delete and insert again in one transaction: no net change
            statements.append(
                ("DELETE FROM memberships WHERE user_id = %s AND project_id = %s", (user, project))
            )
            statements.append(
                ("INSERT INTO memberships VALUES (%s, %s) ON CONFLICT DO NOTHING", (user, project))
            )
        elif pick < 0.42:
            statements.append(
                (
                    "UPDATE memberships SET project_id = %s WHERE user_id = %s AND project_id = %s "
                    "AND NOT EXISTS (SELECT 1 FROM memberships WHERE user_id = %s AND project_id = %s)",
                    (project, user, rng.randint(1, PROJECTS), user, project),
                )
            )
        elif pick < 0.48:
            statements.append(
                ("UPDATE projects SET team_id = %s WHERE id = %s", (rng.randint(0, 3), project))
            )
        elif pick < 0.53:
            statements.append(
                ("UPDATE projects SET archived = NOT archived WHERE id = %s", (project,))
            )
        elif pick < 0.57:
            statements.append(
                (
                    "INSERT INTO team_members VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (user, rng.randint(0, 3)),
                )
            )
        elif pick < 0.61:
            statements.append(
                (
                    "DELETE FROM team_members WHERE user_id = %s AND team_id = %s",
                    (user, rng.randint(0, 3)),
                )
            )
        elif pick < 0.72:
            statements.append(
                (
                    "UPDATE todos SET project_id = %s WHERE id = %s",
                    (None if rng.random() < 0.1 else project, todo),
                )
            )
        elif pick < 0.78:
            statements.append(
                (
                    "UPDATE todos SET title = title || %s, done = NOT done WHERE id = %s",
                    (str(rng.randint(0, 9)), todo),
                )
            )
        elif pick < 0.82:
            statements.append(
                ("UPDATE todos SET assignee = %s WHERE id = %s", (rng.choice(USERS), todo))
            )
        elif pick < 0.88:
            statements.append(
                (
                    "INSERT INTO todos VALUES (%s, %s, %s, %s, false) ON CONFLICT (id) DO UPDATE "
                    "SET project_id = EXCLUDED.project_id",
                    (todo, project, rng.choice(USERS), f"todo {todo}"),
                )
            )
        elif pick < 0.93:
            statements.append(("DELETE FROM todos WHERE id = %s", (todo,)))
        else:
            # a primary-key change, if the new key is free
            statements.append(
                (
                    "UPDATE todos SET id = %s WHERE id = %s AND NOT EXISTS "
                    "(SELECT 1 FROM todos WHERE id = %s)",
                    (todo + 100, todo, todo + 100),
                )
            )
    return statements


def run_txn(conn: Conn, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    with conn.transaction():
        for query, args in statements:
            conn.execute(query, args)


async def settle(
    engine: Engine, conn: Conn, followers: list[Follower], timeout: float = 60
) -> None:
    """Until every transaction so far is processed and no dependency query or move-in
    is still running (twice in a row)."""
    subqueries = engine.registry.subqueries

    def calm() -> bool:
        return all(
            d.state in (DependencyState.LIVE, DependencyState.GONE)
            for d in subqueries.by_key.values()
        ) and all(
            f.live.gone
            or (
                f.live.state is LIVE
                and f.live.subquery is not None
                and f.live.subquery.move is None
            )
            for f in followers
        )

    for _ in range(2):
        await quiesce(engine, conn, timeout)
        await poll(calm, timeout, "dependency queries and move-ins to finish")


async def follow_random_writes(
    engine: Engine, conn: Conn, rng: random.Random, followers: list[Follower], steps: int
) -> None:
    """Each follower equals its SELECT after its snapshot and after each of ``steps``
    random transactions; the moves in and out were exercised."""
    for f in followers:
        f.check(conn, "snapshot")
    for step in range(steps):
        statements = random_txn(rng)
        await asyncio.to_thread(run_txn, conn, statements)
        await settle(engine, conn, followers)
        for f in followers:
            f.check(conn, f"step {step}: {statements}")
    assert sum(f.client.events for f in followers) > 10  # moves were exercised


async def make(engine: Engine, clause: str, params: list[str], **kwargs: Any) -> Follower:
    definition = ShapeDefinition.create("todos", where=clause, params=params, **kwargs)
    live = await engine.shape(definition)
    await poll(lambda: live.state is LIVE or live.gone, 60, "the snapshot")
    assert not live.gone, live.reason
    return Follower(live, clause, params, list(kwargs.get("columns") or COLUMNS))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_writes_one_at_a_time(database_url: str, conn: Conn, seed: int) -> None:
    conn.execute(SCHEMA)
    rng = random.Random(seed)
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    try:
        followers = [await make(engine, clause, params) for clause, params in SHAPES]
        followers.append(await make(engine, SHAPES[0][0], ["3"], replica="full"))
        followers.append(await make(engine, SHAPES[2][0], ["2"], columns=["id", "project_id"]))
        await follow_random_writes(engine, conn, rng, followers, 60)
    finally:
        await engine.stop()


class Writers:
    """Threads committing random transactions until stopped."""

    def __init__(self, url: str, count: int, seed: int) -> None:
        self.url = url
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(seed + i,), daemon=True) for i in range(count)
        ]
        self.transactions = 0
        self.errors: list[BaseException] = []

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        if self.errors:
            raise self.errors[0]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.stop.is_set():
                    try:
                        run_txn(conn, random_txn(rng))
                        self.transactions += 1
                    except (
                        psycopg.errors.DeadlockDetected,
                        psycopg.errors.UniqueViolation,
                        psycopg.errors.SerializationFailure,
                    ):
                        pass
        except BaseException as exc:  # noqa: BLE001 - reported by join
            self.errors.append(exc)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12])
@pytest.mark.parametrize("shapes", [SHAPES, NEGATED_SHAPES], ids=["plain", "negations"])
async def test_concurrent_writers_while_shapes_are_created(
    database_url: str, conn: Conn, seed: int, shapes: list[tuple[str, list[str]]]
) -> None:
    conn.execute(SCHEMA)
    engine = Engine(database_url, flush_interval=0.02, snapshot_connections=3)
    await engine.start()
    try:
        followers: list[Follower] = []
        for round_ in range(3):
            writers = Writers(database_url, 3, seed * 100 + round_ * 10)
            writers.start()
            try:
                for clause, params in shapes[round_ * 3 : (round_ + 1) * 3]:
                    await asyncio.sleep(0.1)
                    followers.append(await make(engine, clause, params))
                for f in followers:
                    f.catch_up()  # as a live client, during the load
                await asyncio.sleep(1.0)
            finally:
                await asyncio.to_thread(writers.join)
            assert writers.transactions > 20
            await settle(engine, conn, followers)
            for f in followers:
                f.check(conn, f"round {round_}")
    finally:
        await engine.stop()


@pytest.mark.parametrize("seed", [4, 5, 6])
async def test_negation_around_a_sublink(database_url: str, conn: Conn, seed: int) -> None:
    conn.execute(SCHEMA)
    rng = random.Random(seed)
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    try:
        followers = [await make(engine, clause, params) for clause, params in NEGATED_SHAPES]
        followers.append(await make(engine, *SHAPES[0]))  # user 1's memberships, positively
        await follow_random_writes(engine, conn, rng, followers, 40)
    finally:
        await engine.stop()
