"""Shapes with ``IN (SELECT ...)`` over HTTP: which clauses are accepted and Electric's
messages for the others, the wire format of tags and move events, subsets and
``changes_only``, and the compaction refusal. Moves, tags and subsets are checked
through ``pysync serve --workers 2`` as well."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from http_support import BOTH_SERVERS, Client, Conn, assert_invalid, data
from subquery_support import TaggedClient

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE projects (id int PRIMARY KEY, team_id int, archived bool NOT NULL DEFAULT false, price numeric, m mood);
CREATE TABLE memberships (user_id int, project_id int, PRIMARY KEY (user_id, project_id));
CREATE TABLE todos (id int PRIMARY KEY, project_id int, assignee int, title text, big bigint, m mood);
INSERT INTO projects SELECT g, g % 2, false, g, 'sad' FROM generate_series(1, 4) g;
INSERT INTO memberships VALUES (1, 1), (1, 2), (2, 3);
INSERT INTO todos SELECT g, 1 + g % 4, 1 + g % 2, 'todo ' || g, g, 'sad' FROM generate_series(1, 12) g;
"""
MEMBER = "project_id IN (SELECT project_id FROM memberships WHERE user_id = $1)"


@pytest.fixture
def db(conn: Conn) -> Conn:
    conn.execute(SCHEMA)
    return conn


def tag(handle: str, value: str | None) -> str:
    raw = "NULL" if value is None else "v:" + value
    return hashlib.md5((handle + raw).encode()).hexdigest()


ACCEPTED = [
    MEMBER,
    "project_id NOT IN (SELECT id FROM projects WHERE archived)",
    "NOT project_id IN (SELECT id FROM projects WHERE team_id = 1)",
    "(project_id, assignee) IN (SELECT project_id, user_id FROM memberships)",
    "project_id IN (SELECT id FROM projects WHERE team_id IN (SELECT team_id FROM projects WHERE id = $1))",
    f"{MEMBER} AND title LIKE 'todo%' OR assignee = 2",
    f"({MEMBER}) AND NOT (project_id IN (SELECT id FROM projects WHERE archived))",
    "m IN (SELECT m FROM projects)",
    "project_id IN (SELECT id AS x FROM public.projects p)",
    "project_id IN ((SELECT project_id FROM memberships))",
]


@pytest.mark.parametrize("where", ACCEPTED)
async def test_accepted_clauses_serve_the_query(client: Client, db: Conn, where: str) -> None:
    handle, _, messages = await client.sync(table="todos", where=where, **{"params[1]": "1"})
    rows = TaggedClient()
    rows.apply_all(messages)
    sql = where.replace("$1", "1")
    expected = {
        f'"public"."todos"/"{r[0]}"' for r in db.execute(f"SELECT id FROM todos WHERE {sql}")
    }
    assert set(rows.rows) == expected
    assert all(m["headers"]["tags"] and m["headers"]["active_conditions"] for m in data(messages))


REJECTED: list[tuple[str, dict[str, Any]]] = [
    (
        "EXISTS (SELECT project_id FROM memberships)",
        {"where": ["At location 0: only `value IN (SELECT ...)` sublinks are supported right now"]},
    ),
    (
        "project_id = ANY (SELECT project_id FROM memberships)",
        {
            "where": [
                "At location 11: only `value IN (SELECT ...)` sublinks are supported right now"
            ]
        },
    ),
    (
        "project_id = (SELECT project_id FROM memberships)",
        {
            "where": [
                "At location 13: only `value IN (SELECT ...)` sublinks are supported right now"
            ]
        },
    ),
    (
        "project_id IN (SELECT 1 FROM memberships)",
        {"where": ["At location 37: Expected a plain column reference"]},
    ),
    (
        "project_id IN (SELECT project_id FROM memberships m, projects p)",
        {"where": ["Expected a single table reference"]},
    ),
    (
        "project_id IN (SELECT project_id FROM memberships ORDER BY 1)",
        {"where": ["SELECT statement must not contain any clauses"]},
    ),
    (
        "project_id IN (SELECT DISTINCT project_id FROM memberships)",
        {"where": ["SELECT statement must not contain any clauses"]},
    ),
    (
        "project_id IN (SELECT project_id FROM memberships LIMIT 1)",
        {"where": ["SELECT statement must not contain any clauses"]},
    ),
    (
        "project_id IN (SELECT id FROM nowhere)",
        {
            "table": [
                'Table "public"."nowhere" does not exist. If the table name contains capitals '
                "or special characters you must quote it."
            ]
        },
    ),
    (
        "project_id IN (SELECT nothing FROM memberships)",
        {"columns": ["The following columns are not found on the table: nothing"]},
    ),
    (
        "project_id IN (SELECT project_id FROM memberships WHERE nothing = 1)",
        {"where": ["At location 56: unknown reference nothing"]},
    ),
    (
        "title IN (SELECT project_id FROM memberships)",
        {
            "where": [
                "At location 6: left side of `IN (SELECT ...)` has type text but subquery returns int4[]"
            ]
        },
    ),
    (
        "big IN (SELECT project_id FROM memberships)",
        {
            "where": [
                "At location 4: left side of `IN (SELECT ...)` has type int8 but subquery returns int4[]"
            ]
        },
    ),
    (
        "project_id IN (SELECT user_id, project_id FROM memberships)",
        {
            "where": [
                "At location 11: left side of `IN (SELECT ...)` has type int4 but subquery returns "
                "row of (int4, int4)[]"
            ]
        },
    ),
    (
        "project_id + 1 IN (SELECT project_id FROM memberships)",
        {
            "where": [
                "At location 15: currently, left side of `IN (SELECT ...)` can only be a column "
                "reference or a list of column references"
            ]
        },
    ),
    (
        "project_id IN (SELECT id FROM projects) OR NOT project_id IN (SELECT id FROM projects)",
        {
            "where": [
                "a subquery dependency cannot be used with both positive and negative polarity "
                "in the same filter"
            ]
        },
    ),
    (
        "(project_id IN (SELECT id FROM projects)) IS TRUE",
        {"where": ["At location 12: `IN (SELECT ...)` can only be combined with AND, OR and NOT"]},
    ),
    (
        "project_id::numeric IN (SELECT price FROM projects)",
        {
            "where": [
                "At location 20: currently, left side of `IN (SELECT ...)` can only be a column "
                "reference or a list of column references"
            ]
        },
    ),
    (
        "project_id IN (SELECT id FROM projects WHERE id = $2)",
        {"where": ["At location 50: parameter $2 was not provided"]},
    ),
]


@pytest.mark.parametrize(("where", "errors"), REJECTED)
async def test_rejected_clauses_with_electrics_messages(
    client: Client, db: Conn, where: str, errors: dict[str, Any]
) -> None:
    response = await client.shape(table="todos", offset="-1", where=where, **{"params[1]": "1"})
    assert_invalid(response, errors)


async def test_too_many_disjuncts(client: Client, db: Conn) -> None:
    where = MEMBER + " AND " + " AND ".join(f"(assignee = {i} OR title = 'x{i}')" for i in range(8))
    response = await client.shape(table="todos", offset="-1", where=where, **{"params[1]": "1"})
    assert_invalid(
        response,
        {
            "where": [
                "WHERE clause too complex for DNF decomposition (256 disjuncts exceeds limit of 100)"
            ]
        },
    )


async def test_compaction_refused_for_subquery_shapes(client: Client, db: Conn) -> None:
    response = await client.shape(
        table="todos",
        offset="-1",
        where=MEMBER,
        experimental_compaction="true",
        **{"params[1]": "1"},
    )
    assert_invalid(
        response, {"experimental_compaction": ["can't be enabled for shapes with subqueries"]}
    )
    plain = await client.shape(
        table="todos", offset="-1", where="id = 1", experimental_compaction="true"
    )
    assert plain.status_code == 200


@BOTH_SERVERS
async def test_wire_format_of_moves(client: Client, db: Conn) -> None:
    params = {"table": "todos", "where": MEMBER, "params[1]": "1"}
    handle, offset, messages = await client.sync(**params)
    row = next(m for m in data(messages) if m["value"]["project_id"] == "1")
    assert row["headers"]["tags"] == [tag(handle, "1")]
    assert row["headers"]["active_conditions"] == [True]

    xid = db.execute(
        "INSERT INTO memberships VALUES (1, 3) RETURNING xmin::text::bigint"
    ).fetchone()[0]  # type: ignore[index]
    response = await client.shape(offset=offset, handle=handle, live="true", **params)
    body = response.json()
    while not any("event" in m["headers"] for m in body):
        response = await client.shape(
            offset=response.headers["electric-offset"], handle=handle, live="true", **params
        )
        body += response.json()
    event = next(m for m in body if "event" in m["headers"])
    assert event == {
        "headers": {
            "event": "move-in",
            "patterns": [{"pos": 0, "value": tag(handle, "3")}],
            "txids": [xid],
        }
    }
    rows = [m for m in body if "key" in m]
    assert rows and all(
        m["headers"]["is_move_in"] and m["headers"]["tags"] == [tag(handle, "3")] for m in rows
    )
    assert body[-2]["headers"]["control"] == "snapshot-end"
    offset = response.headers["electric-offset"]

    xid = db.execute(
        "DELETE FROM memberships WHERE user_id = 1 AND project_id = 2 RETURNING xmin::text::bigint"
    ).fetchone()
    response = await client.shape(offset=offset, handle=handle, live="true", **params)
    body = response.json()
    assert body[0]["headers"]["event"] == "move-out"
    assert body[0]["headers"]["patterns"] == [{"pos": 0, "value": tag(handle, "2")}]
    offset = response.headers["electric-offset"]

    db.execute("UPDATE todos SET project_id = 3 WHERE id = 4")  # project 1 -> 3: both in
    response = await client.shape(offset=offset, handle=handle, live="true", **params)
    update = response.json()[0]
    assert update["headers"]["operation"] == "update"
    assert update["headers"]["tags"] == [tag(handle, "3")]
    assert update["headers"]["removed_tags"] == [tag(handle, "1")]
    assert update["headers"]["active_conditions"] == [True]


@BOTH_SERVERS
async def test_dnf_tags_and_active_conditions(client: Client, db: Conn) -> None:
    where = f"{MEMBER} OR assignee = 2"
    handle, _, messages = await client.sync(table="todos", where=where, **{"params[1]": "1"})
    by_id = {m["value"]["id"]: m["headers"] for m in data(messages)}
    one = by_id["4"]  # project 1 (a member), assignee 1
    assert one["tags"] == [tag(handle, "1") + "/", "/1"]
    assert one["active_conditions"] == [True, False]
    three = by_id["3"]  # project 4 (not a member), assignee 2
    assert three["tags"] == [tag(handle, "4") + "/", "/1"]
    assert three["active_conditions"] == [False, True]


@BOTH_SERVERS
async def test_subsets_and_changes_only(client: Client, db: Conn) -> None:
    params = {"table": "todos", "where": MEMBER, "params[1]": "1", "log": "changes_only"}
    response = await client.shape(offset="-1", **params)
    assert response.status_code == 200
    assert data(response.json()) == []
    handle = response.headers["electric-handle"]
    subset = await client.shape(
        offset="-1", handle=handle, subset__where="title LIKE 'todo 1%'", **params
    )
    assert subset.status_code == 200, subset.text
    rows = subset.json()["data"]
    expected = {
        r[0]
        for r in db.execute(
            "SELECT id::text FROM todos WHERE title LIKE 'todo 1%' AND project_id IN "
            "(SELECT project_id FROM memberships WHERE user_id = 1)"
        )
    }
    assert {r["value"]["id"] for r in rows} == expected
    assert all(r["headers"]["tags"] == [tag(handle, r["value"]["project_id"])] for r in rows)
    refused = await client.shape(
        offset="-1", handle=handle, subset__where="id IN (SELECT id FROM todos)", **params
    )
    assert_invalid(refused, {"subset": {"where": ["Subqueries are not allowed in subsets"]}})
    odd = await client.shape(
        offset="-1", handle=handle, subset__where="title = '(select'", **params
    )
    assert odd.status_code == 200, odd.text
