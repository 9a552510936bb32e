"""``pysync.Writer`` against a real Postgres: TanStack DB mutation batches applied in one
transaction, per-table rules, all-or-nothing rollback, values parsed by column type,
injection attempts, the txid as the shape's change messages carry it, the HTTP endpoint."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import pysync
from pysync import MutationError, MutationForbidden, MutationInvalid, WriteContext, Writer
from pysync.client import ChangeMessage, Client
from pysync.engine import Engine
from pysync.http.api import ShapeAPI

Conn = psycopg.Connection[tuple[Any, ...]]
JSON = {"content-type": "application/json"}

SCHEMA = """
CREATE TABLE todos (id int PRIMARY KEY, title text NOT NULL, done bool NOT NULL DEFAULT false,
                    owner text, deleted bool NOT NULL DEFAULT false);
CREATE TABLE audit (n serial PRIMARY KEY, what text NOT NULL);
INSERT INTO todos (id, title, owner) VALUES (1, 'one', 'ann'), (2, 'two', 'bob');
"""


@pytest.fixture
def db(conn: Conn) -> Conn:
    conn.execute(SCHEMA)
    return conn


def insert(
    id_: int, title: Any = "t", table: Any = ("public", "todos"), **extra: Any
) -> dict[str, Any]:
    return {
        "type": "insert",
        "modified": {"id": id_, "title": title, **extra},
        "syncMetadata": {"relation": list(table) if isinstance(table, tuple) else table},
    }


def update(id_: int, **changes: Any) -> dict[str, Any]:
    return {
        "type": "update",
        "original": {"id": id_, "title": "?"},
        "changes": changes,
        "syncMetadata": {"relation": ["public", "todos"]},
    }


def delete(id_: int) -> dict[str, Any]:
    return {
        "type": "delete",
        "original": {"id": id_},
        "syncMetadata": {"relation": ["public", "todos"]},
    }


def rows(conn: Conn, table: str = "todos") -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


def xmin_of(conn: Conn, id_: int) -> int:
    row = conn.execute("SELECT xmin::text FROM todos WHERE id = %s", (id_,)).fetchone()
    assert row is not None
    return int(row[0])


def test_each_operation_in_one_transaction(db: Conn) -> None:
    writer = Writer().allow("todos")
    txid = writer.apply(
        [insert(3, "three", owner="cy"), update(1, title="ONE", done=True), delete(2)], db
    )
    assert rows(db) == [(1, "ONE", True, "ann", False), (3, "three", False, "cy", False)]
    assert xmin_of(db, 3) == txid == xmin_of(db, 1)  # the rows' writer is the returned transaction
    second = writer.apply(json.dumps([update(3, done=True)]).encode(), db)  # bytes are decoded
    assert second != txid and xmin_of(db, 3) == second


def test_a_failing_mutation_rolls_back_the_whole_batch(db: Conn) -> None:
    writer = Writer().allow("todos")
    before = rows(db)
    with pytest.raises(MutationInvalid) as caught:
        writer.apply([insert(3), update(1, title="changed"), delete(2), insert(1)], db)
    assert caught.value.index == 3
    assert "duplicate key" in caught.value.reason
    assert rows(db) == before
    with pytest.raises(MutationInvalid) as caught:
        writer.apply([insert(3), update(1, done="maybe")], db)
    assert (caught.value.index, caught.value.reason) == (
        1,
        "column 'done': expected a boolean, got a string",
    )
    with pytest.raises(MutationInvalid) as caught:
        writer.apply([delete(1), update(2, title=None)], db)  # NOT NULL, enforced by Postgres
    assert caught.value.index == 1 and "null value" in caught.value.reason
    with pytest.raises(MutationInvalid) as caught:
        writer.apply([update(99, title="x")], db)
    assert caught.value.reason == 'no row in "public"."todos" with key id=99'
    assert rows(db) == before


def test_rules_check_accept_and_unknown_tables(db: Conn) -> None:
    checked: list[int] = []

    def check(mutation: pysync.Mutation) -> bool | str | None:
        checked.append(mutation.index)
        if mutation.changes.get("owner") == "mallory":
            return "owner must be you"
        if mutation.changes.get("title") == "nope":
            return False
        if mutation.changes.get("title") == "raise":
            raise MutationForbidden("no raising")
        return None

    writer = Writer().allow("todos", check=check, accept=["insert", "update"])
    before = rows(db)
    with pytest.raises(MutationForbidden) as caught:
        writer.apply([insert(3), insert(4, owner="mallory"), insert(5)], db)
    assert (caught.value.index, caught.value.reason, checked) == (1, "owner must be you", [0, 1])
    for bad, reason in (
        (insert(4, "nope"), "refused by check"),
        (insert(4, "raise"), "no raising"),
    ):
        with pytest.raises(MutationForbidden) as caught:
            writer.apply([insert(3), bad], db)
        assert (caught.value.index, caught.value.reason) == (1, reason)
    with pytest.raises(MutationForbidden, match='delete is not accepted on "public"."todos"'):
        writer.apply([delete(1)], db)
    with pytest.raises(
        MutationForbidden, match='writes to "public"."audit" are not allowed'
    ) as caught:
        writer.apply([insert(3), insert(1, table=("public", "audit"))], db)
    assert caught.value.index == 1
    with pytest.raises(MutationForbidden, match='"other"."todos" are not allowed'):
        writer.apply([insert(3, table=("other", "todos"))], db)
    assert rows(db) == before
    # A bare table name in syncMetadata follows identifier rules (public by default).
    writer.apply([insert(3, table="todos"), insert(4, table='public."todos"')], db)
    assert [r[0] for r in rows(db)] == [1, 2, 3, 4]
    writer.allow("missing")
    with pytest.raises(MutationInvalid, match='table "public"."missing" does not exist'):
        writer.apply([insert(1, table=("public", "missing"))], db)


def own_todos(user: str) -> Writer:
    """The README's rules: a user writes only their own todos."""

    def own(mutation: pysync.Mutation) -> str | None:
        if mutation.data.get("owner", user) != user or mutation.changes.get("owner", user) != user:
            return "not your todo"
        return None

    return Writer().allow("todos", check=own, validate=lambda ctx: {**ctx.values, "owner": user})


def lying(kind: str, id_: int, **changes: Any) -> dict[str, Any]:
    """A mutation whose ``original`` claims the row is Ann's."""
    return {
        "type": kind,
        "original": {"id": id_, "title": "?", "owner": "ann"},
        "changes": changes,
        "syncMetadata": {"relation": ["public", "todos"]},
    }


# Ann's attempts on todo 2 (Bob's) and on the key of todo 1 (hers): each refused.
ATTACKS: list[tuple[dict[str, Any], type[MutationError], str]] = [
    (lying("update", 2, title="mine now"), MutationForbidden, "not your todo"),
    (lying("update", 2, done=True, owner="ann"), MutationForbidden, "not your todo"),
    (lying("delete", 2), MutationForbidden, "not your todo"),
    (update(1, owner="bob"), MutationForbidden, "not your todo"),
    (update(1, id=7), MutationForbidden, "an update cannot change the primary key (column 'id')"),
    (update(1, id=2, title="x"), MutationForbidden, "an update cannot change the primary key"),
    (lying("update", 99, title="x"), pysync.MutationNotFound, "no row in"),
    (lying("delete", 99), pysync.MutationNotFound, "no row in"),
]


@pytest.mark.parametrize("driver", ["psycopg", "psycopg async"])
def test_rules_judge_the_stored_row_not_the_clients_original(
    database_url: str, db: Conn, driver: str
) -> None:
    writer = own_todos("ann")
    seen: list[dict[str, Any]] = []
    writer.rules[("public", "todos")].pre_apply = lambda ctx: seen.append(dict(ctx.mutation.data))

    def apply(batch: list[dict[str, Any]]) -> int:
        if driver == "psycopg":
            return writer.apply(batch, db)

        async def main() -> int:
            async with await psycopg.AsyncConnection.connect(database_url) as aconn:
                txid = await writer.apply_async(batch, aconn)
                await aconn.commit()
                return txid

        return asyncio.run(main())

    before = rows(db)
    for attack, error, reason in ATTACKS:
        with pytest.raises(error) as caught:
            apply([update(1, title="fine"), attack])  # the whole batch is refused
        assert caught.value.index == 1 and caught.value.reason.startswith(reason), attack
        assert rows(db) == before
    assert seen[0] == {"id": 1, "title": "one", "done": False, "owner": "ann", "deleted": False}
    # A key repeated with its own value (a client sending the whole row) is no change.
    apply([update(1, id="1", title="uno"), insert(3, "three"), lying("delete", 3)])
    assert rows(db) == [(1, "uno", False, "ann", False), (2, "two", False, "bob", False)]


def test_load_validate_and_hooks(db: Conn) -> None:
    calls: list[str] = []

    def load(ctx: WriteContext) -> dict[str, Any] | None:
        calls.append(f"load {ctx.index}")
        row = db.execute(
            "SELECT id, owner FROM todos WHERE id = %s AND owner = 'ann'", (ctx.key["id"],)
        ).fetchone()
        return None if row is None else {"id": row[0], "owner": row[1]}

    def validate(ctx: WriteContext) -> dict[str, Any]:
        calls.append(f"validate {ctx.index} {ctx.row}")
        if len(str(ctx.values.get("title", ""))) > 10:
            raise ValueError("title is too long")
        return {**ctx.values, "owner": "ann"}  # whatever the client said

    def pre(ctx: WriteContext) -> None:
        calls.append(f"pre {ctx.index}")

    def post(ctx: WriteContext) -> None:
        calls.append(f"post {ctx.index}")
        db.execute("INSERT INTO audit (what) VALUES (%s)", (f"{ctx.operation} {ctx.txid}",))

    writer = Writer().allow("todos", load=load, validate=validate, pre_apply=pre, post_apply=post)
    txid = writer.apply([insert(3, "three", owner="eve"), update(1, title="uno")], db)
    assert calls == [
        "validate 0 None",
        "pre 0",
        "post 0",
        "load 1",
        "validate 1 {'id': 1, 'owner': 'ann'}",
        "pre 1",
        "post 1",
    ]
    assert rows(db)[0][:4] == (1, "uno", False, "ann") and rows(db)[2][3] == "ann"
    assert rows(db, "audit") == [(1, f"insert {txid}"), (2, f"update {txid}")]
    with pytest.raises(MutationInvalid) as caught:
        writer.apply([update(2, title="dos")], db)  # bob's: load finds nothing
    assert caught.value.index == 0 and "no row" in caught.value.reason
    with pytest.raises(MutationInvalid, match="mutation 1: title is too long"):
        writer.apply([insert(4), insert(5, "far too long a title")], db)
    # A callback's bug is the app's error (a 500 from handle), not the client's.
    with pytest.raises(TypeError, match="validate returned int"):
        Writer().allow("todos", validate=lambda ctx: 5).apply([insert(4)], db)
    assert rows(db, "audit") == [(1, f"insert {txid}"), (2, f"update {txid}")]
    assert len(rows(db)) == 3


def test_custom_statements_replace_the_defaults(db: Conn) -> None:
    def soft_delete(ctx: WriteContext) -> None:
        ctx.connection.execute("UPDATE todos SET deleted = true WHERE id = %s", (ctx.key["id"],))

    def upsert(ctx: WriteContext) -> None:
        ctx.connection.execute(
            "INSERT INTO todos (id, title) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET title = excluded.title",
            (ctx.values["id"], ctx.values["title"]),
        )

    writer = Writer().allow("todos", delete=soft_delete, insert=upsert)
    writer.apply([delete(2), insert(1, "again"), insert(3, "new")], db)
    assert rows(db) == [
        (1, "again", False, "ann", False),
        (2, "two", False, "bob", True),
        (3, "new", False, None, False),
    ]


def test_values_are_parsed_by_column_type(conn: Conn) -> None:
    conn.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
    conn.execute("""CREATE TABLE typed (
        id int8 PRIMARY KEY, small int2, f float8, r real, num numeric(10, 3), b bool, u uuid,
        j jsonb, js json, a int4[], m text[][], ts timestamptz, d date, by bytea, e mood, vc varchar(3),
        g int GENERATED ALWAYS AS (small * 2) STORED)""")
    writer = Writer().allow("typed")
    relation = ("public", "typed")
    value = {
        "id": "9007199254740993",
        "small": 7.0,
        "f": "NaN",
        "r": 0.1,
        "num": 0.1,
        "b": "t",
        "u": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "j": {"a": [1, None, "x"]},
        "js": "just a string",
        "a": [1, None, "3"],
        "m": [["a", "b"], ["c,d", None]],
        "ts": "2024-01-31T13:45:00.123Z",
        "d": "2024-02-29",
        "by": "\\xdead",
        "e": "happy",
        "vc": "abc",
    }
    writer.apply([insert(0, table=relation) | {"modified": value}], conn)
    row = conn.execute(
        "SELECT id, small, f::text, r, num, b, u::text, j, js::text, a, m, ts, d, by, e, vc, g "
        "FROM typed"
    ).fetchone()
    assert row is not None
    assert row[:9] == (
        9007199254740993,
        7,
        "NaN",
        pytest.approx(0.1),
        Decimal("0.100"),
        True,
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        {"a": [1, None, "x"]},
        '"just a string"',
    )
    assert row[9:11] == ([1, None, 3], [["a", "b"], ["c,d", None]])
    assert (
        row[11].isoformat() == "2024-01-31T13:45:00.123000+00:00" and str(row[12]) == "2024-02-29"
    )
    assert row[13:] == (b"\xde\xad", "happy", "abc", 14)

    def fails(**values: Any) -> str:
        with pytest.raises(MutationInvalid) as caught:
            writer.apply(
                [
                    {
                        "type": "insert",
                        "modified": {"id": 1, **values},
                        "syncMetadata": {"relation": list(relation)},
                    }
                ],
                conn,
            )
        assert caught.value.index == 0
        return caught.value.reason

    assert fails(small=40000) == "column 'small': 40000 is out of range for int2"
    assert fails(small=True) == "column 'small': expected an integer, got a boolean"
    assert fails(small="1e3") == "column 'small': invalid integer '1e3'"
    assert fails(f={"x": 1}) == "column 'f': expected a scalar, got an object"
    assert fails(u="not-a-uuid") == "column 'u': invalid uuid 'not-a-uuid'"
    assert fails(vc=["x"]) == "column 'vc': expected a scalar, got an array"
    assert fails(vc=5) == "column 'vc': expected a string, got int"
    assert fails(a=5) == "column 'a': expected an array, got int"
    assert fails(g=1) == "column 'g' is generated and cannot be written"
    assert fails(nope=1) == 'no column \'nope\' in "public"."typed"'
    assert "too long" in fails(
        vc="abcd"
    )  # varchar(3): Postgres's assignment check, not a truncation
    assert "invalid input value for enum mood" in fails(e="angry")
    assert "date/time field value out of range" in fails(d="2024-13-45")
    assert conn.execute("SELECT count(*) FROM typed").fetchone() == (1,)


def test_injection_attempts_are_data_or_rejected(db: Conn) -> None:
    writer = Writer().allow("todos")
    evil = "x'); DROP TABLE todos; --"
    writer.apply(
        [insert(3, evil, owner='"; DELETE FROM todos; --'), update(1, title="' OR '1'='1")], db
    )
    assert rows(db)[0][1] == "' OR '1'='1" and rows(db)[2][1:4] == (
        evil,
        False,
        '"; DELETE FROM todos; --',
    )
    attempts = [
        ("todos; DROP TABLE audit", MutationError),
        ('todos" ; DROP TABLE audit; --', MutationError),
        (["public", "todos; DROP TABLE audit"], MutationForbidden),
        (["public", 'todos"; DROP TABLE audit; --'], MutationForbidden),
        (["pg_catalog", "pg_class"], MutationForbidden),
        (["information_schema", "tables"], MutationForbidden),
        ("pg_catalog.pg_authid", MutationForbidden),
    ]
    for relation, error in attempts:
        mutation = {
            "type": "insert",
            "modified": {"id": 9, "title": "x"},
            "syncMetadata": {"relation": relation},
        }
        with pytest.raises(error) as caught:
            writer.apply([mutation], db)
        assert caught.value.index == 0, relation
    with pytest.raises(MutationInvalid, match="no column"):
        writer.apply([update(1, **{"title\" = 'x'; --": "y"})], db)
    with pytest.raises(MutationInvalid, match="invalid integer"):
        writer.apply([update(1, title="y") | {"original": {"id": "1 OR 1=1"}}], db)
    with pytest.raises(ValueError, match="system schema"):
        Writer().allow("pg_catalog.pg_class")
    assert db.execute("SELECT count(*) FROM audit").fetchone() == (0,)
    assert len(rows(db)) == 3


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"not": "a list"}, "expected a list of mutations"),
        ([], "empty transaction"),
        (["x"], "mutation 0: expected an object"),
        (
            [{"type": "upsert"}],
            "mutation 0: type must be one of insert, update, delete; got 'upsert'",
        ),
        (
            [{"type": "insert", "modified": {}}],
            'mutation 0: syncMetadata.relation must be ["schema", "table"]',
        ),
        (
            [
                {
                    "type": "update",
                    "original": {"id": 1},
                    "changes": None,
                    "syncMetadata": {"relation": "todos"},
                }
            ],
            "mutation 0: changes must be an object",
        ),
        (
            [{"type": "delete", "original": [1], "syncMetadata": {"relation": "todos"}}],
            "mutation 0: original must be an object",
        ),
    ],
)
def test_malformed_batches(db: Conn, payload: Any, reason: str) -> None:
    with pytest.raises(MutationError) as caught:
        Writer().allow("todos").apply(payload, db)
    assert type(caught.value) is MutationError and str(caught.value) == reason


def test_async_apply_with_async_callbacks(database_url: str, db: Conn) -> None:
    async def main() -> int:
        async def count_rows(ctx: WriteContext) -> None:
            await asyncio.sleep(0)
            cur = await ctx.connection.execute("SELECT count(*) FROM todos")
            counts.append((await cur.fetchone())[0])

        writer = Writer().allow("todos", pre_apply=count_rows, accept=["insert", "update"])
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
            return await writer.apply_async([insert(3), update(3, done=True)], aconn)

    counts: list[int] = []
    txid = asyncio.run(main())
    assert xmin_of(db, 3) == txid
    assert counts == [2, 3]  # the second mutation sees the first: one transaction
    with pytest.raises(RuntimeError, match="apply_async"):
        Writer().allow("todos", validate=lambda ctx: asyncio.sleep(0)).apply([insert(4)], db)
    assert len(rows(db)) == 3


def test_a_batch_in_an_open_transaction_is_a_savepoint(database_url: str, db: Conn) -> None:
    with psycopg.connect(database_url) as tx:  # not autocommit: the caller's transaction
        tx.execute("INSERT INTO audit (what) VALUES ('before')")
        with pytest.raises(MutationInvalid):
            Writer().allow("todos").apply([insert(3), insert(1)], tx)
        txid = Writer().allow("todos").apply([insert(4)], tx)
        # The top-level xid, which replication (and so txids) reports, not the savepoint's.
        assert tx.execute("SELECT pg_current_xact_id()::xid::text").fetchone() == (str(txid),)
        assert db.execute("SELECT count(*) FROM todos WHERE id = 4").fetchone() == (
            0,
        )  # not yet committed
        tx.commit()
    assert [r[1] for r in rows(db, "audit")] == ["before"]
    assert db.execute("SELECT count(*) FROM todos WHERE id = 3").fetchone() == (0,)


# -- the txid matches the shape's change messages -----------------------------------------


@pytest.fixture
async def shapes(engine: Engine) -> AsyncIterator[Client]:
    api = ShapeAPI(engine, long_poll_timeout=1.0)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(api.app()), base_url="http://pysync.test"
    )
    async with Client(http=http) as client:
        yield client
    await http.aclose()


async def test_txid_is_the_one_in_the_change_messages(
    database_url: str, db: Conn, shapes: Client
) -> None:
    stream = shapes.stream("todos")
    async for _ in stream:  # the initial snapshot
        if stream.up_to_date:
            break
    writer = Writer().allow("todos")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
        txid = await writer.apply_async(
            [insert(3, "three"), update(1, title="uno"), delete(2)], aconn
        )
    seen: list[ChangeMessage] = []
    async for message in stream:
        if isinstance(message, ChangeMessage):
            seen.append(message)
            if len(seen) == 3:
                break
    await stream.aclose()
    assert [(m.operation, m.value["id"]) for m in seen] == [
        ("insert", 3),
        ("update", 1),
        ("delete", 2),
    ]
    assert all(m.headers.txids == (txid,) for m in seen)

    # A materialised shape: a later write arrives as a change, an earlier one is in its snapshot.
    async with await shapes.shape("todos", timeout=60) as shape:
        await shape.wait_for_txid(txid, timeout=5)
        later = writer.apply([update(3, done=True)], db)
        await shape.wait_for_txid(later, timeout=30)
        assert shape.rows['"public"."todos"/"3"']["done"] is True
        with pytest.raises(TimeoutError):  # a transaction yet to come is in neither
            await shape.wait_for_txid(later + 1000, timeout=0.2)


# -- the HTTP endpoint -----------------------------------------------------------------------


@pytest.fixture
def endpoint(database_url: str, db: Conn) -> Iterator[httpx.AsyncClient]:
    writer = Writer(database_url=database_url).allow(
        "todos",
        check=lambda m: "no deletes here" if m.operation == "delete" else None,
        validate=lambda ctx: _title_rule(ctx),
    )

    async def mutate(request: Request) -> Response:
        return await writer.handle(request)

    app = Starlette(routes=[Route("/api/mutations", mutate, methods=["GET", "POST"])])
    yield httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://app.test")


def _title_rule(ctx: WriteContext) -> None:
    if ctx.values.get("title") == "":
        raise MutationInvalid("title must not be empty")


async def test_endpoint_answers_txid_or_json_errors(endpoint: httpx.AsyncClient, db: Conn) -> None:
    ok = await endpoint.post("/api/mutations", json=[insert(3, "three")])
    assert ok.status_code == 200 and ok.json() == {"txid": xmin_of(db, 3)}
    wrapped = await endpoint.post("/api/mutations", json={"mutations": [update(3, title="3")]})
    assert wrapped.status_code == 200 and wrapped.json() == {"txid": xmin_of(db, 3)}

    async def error(body: bytes | Any) -> tuple[int, Any]:
        if isinstance(body, bytes):
            response = await endpoint.post("/api/mutations", content=body, headers=JSON)
        else:
            response = await endpoint.post("/api/mutations", json=body)
        assert response.headers["content-type"] == "application/json"
        return response.status_code, response.json()

    status, body = await error(b"{not json")
    assert (
        status == 400
        and body["mutation"] is None
        and body["message"].startswith("the body is not JSON")
    )
    assert await error([{"type": "insert"}]) == (
        400,
        {
            "message": 'mutation 0: syncMetadata.relation must be ["schema", "table"]',
            "mutation": 0,
            "reason": 'syncMetadata.relation must be ["schema", "table"]',
        },
    )
    assert await error([insert(4), delete(1)]) == (
        403,
        {
            "message": "mutation 1: no deletes here",
            "mutation": 1,
            "reason": "no deletes here",
        },
    )
    assert await error([insert(4), insert(5, "")]) == (
        422,
        {
            "message": "mutation 1: title must not be empty",
            "mutation": 1,
            "reason": "title must not be empty",
        },
    )
    status, body = await error([insert(1)])
    assert status == 422 and body["reason"].startswith(
        "duplicate key value violates unique constraint"
    )
    assert (await endpoint.get("/api/mutations")).status_code == 405
    too_big = await endpoint.post(
        "/api/mutations", content=b"[" + b" " * (5 * 1024 * 1024) + b"]", headers=JSON
    )
    assert too_big.status_code == 413
    assert [r[0] for r in rows(db)] == [1, 2, 3]


async def test_endpoint_bounds_its_body_before_reading_it(database_url: str, db: Conn) -> None:
    """A body declared over the limit is a 413 before any of it is read, and a client
    that leaves before its body ends is a 400, not the app's error (it was an exception
    out of ``handle``: a 500 and a traceback, for any client that liked)."""
    writer = Writer(database_url=database_url).allow("todos")
    read: list[int] = []

    async def call(declared: int, pieces: list[bytes], leave: bool) -> tuple[int, Any]:
        queue = [{"type": "http.request", "body": p, "more_body": True} for p in pieces] + [
            {"type": "http.disconnect"} if leave else {"type": "http.request", "body": b""}
        ]

        async def receive() -> dict[str, Any]:
            read.append(len(queue))
            return queue.pop(0)

        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % declared)]
        scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        response = await writer.handle(Request(scope, receive))
        return response.status_code, json.loads(bytes(response.body))

    status, body = await call(5 * 1024 * 1024, [b"[" + b" " * 1000], leave=False)
    assert (status, body) == (413, {"message": "Request body too large (max 4194304 bytes)"})
    assert read == []
    body_text = json.dumps([insert(9, "nine")]).encode()
    status, body = await call(len(body_text), [body_text[:10]], leave=True)
    assert status == 400 and "disconnected" in body["message"]
    assert [r[0] for r in rows(db)] == [1, 2]


async def test_endpoint_reads_only_json(endpoint: httpx.AsyncClient, db: Conn) -> None:
    # A cross-site form post needs no CORS preflight and carries the user's cookies.
    body = json.dumps([update(1, title="forged")])
    for content_type in (
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
        None,
    ):
        headers = {"content-type": content_type} if content_type else {}
        response = await endpoint.post("/api/mutations", content=body, headers=headers)
        assert response.status_code == 415, content_type
        assert "application/json" in response.json()["message"]
    ok = await endpoint.post(
        "/api/mutations",
        content=json.dumps([update(1, title="uno")]),
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert ok.status_code == 200
    assert [r[1] for r in rows(db)] == ["uno", "two"]


async def test_deeply_nested_json_is_a_400(endpoint: httpx.AsyncClient, db: Conn) -> None:
    for depth in (101, 1000, 100_000):
        deep = b"[" * depth + b"]" * depth
        response = await endpoint.post("/api/mutations", content=deep, headers=JSON)
        assert response.status_code == 400, depth
        assert response.json()["message"] == "JSON nested deeper than 100 levels"
    # Nesting inside a value counts: [ {modified: {title: 97 levels}} ] is 100 levels.
    nested: Any = "[x]"  # brackets in strings are not nesting
    for _ in range(97):
        nested = [nested]
    (parsed,) = Writer().allow("todos").parse(json.dumps([insert(3, nested)]))
    assert parsed[0].changes["title"] == nested
    with pytest.raises(MutationError, match="JSON nested deeper than 100 levels"):
        Writer().allow("todos").parse(json.dumps([insert(3, [nested])]))
    assert [r[0] for r in rows(db)] == [1, 2]


async def test_endpoint_with_the_apps_connection(database_url: str, db: Conn) -> None:
    writer = Writer().allow("todos")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:

        async def mutate(request: Request) -> Response:
            return await writer.handle(request, aconn)

        app = Starlette(routes=[Route("/m", mutate, methods=["POST"])])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://a"
        ) as http:
            response = await http.post("/m", json=[insert(7, str(uuid.uuid4()))])
    assert response.status_code == 200 and response.json()["txid"] == xmin_of(db, 7)
    with pytest.raises(TypeError, match="database_url"):
        request = Request(
            {
                "type": "http",
                "method": "POST",
                "headers": [(b"content-type", b"application/json")],
                "path": "/",
            },
            _empty_body,
        )
        await Writer().allow("todos").handle(request)


async def _empty_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"[1]", "more_body": False}
