"""A change one shape cannot process loses that shape only (clients refetch): every other
shape keeps following its table, equal to ``SELECT``. And a table that is no longer
``REPLICA IDENTITY FULL`` never makes a shape serve values the WAL did not send."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from engine_runner import Conn, make, materialise, poll, quiesce, read_all, table_state
from http_support import Client, make_api
from pysync.engine import Engine
from pysync.shapes.consumer import LIVE, SNAPSHOTTING, ShapeConsumer
from pysync.shapes.definition import ShapeDefinition
from subquery_support import TaggedClient

# A TOASTed value: > 2 kB even compressed (random md5s), stored out of line.
BIG = "(SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 300) g)"
DOCS = ["id", "small", "big_text"]


@pytest.fixture
def docs(conn: Conn) -> Conn:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, small int NOT NULL, big_text text)")
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, v int)")
    for i, prefix in enumerate("ABC", 1):
        conn.execute(f"INSERT INTO docs VALUES ({i}, {i}, '{prefix}' || {BIG})")
    conn.execute("INSERT INTO notes VALUES (1, 1)")
    return conn


def equal_to_select(conn: Conn, live: ShapeConsumer, where: str | None = None) -> None:
    assert not live.gone, live.reason
    table = live.definition.table
    columns = DOCS if table == "docs" else ["id", "v"]
    assert materialise(read_all(live.log)) == table_state(
        conn, "public", table, columns, ["id"], where
    )


async def restored(engine: Engine) -> None:
    """Until pysync put FULL back. Before a synchronous query of ``docs`` in a test that
    set it back from FULL: the restore's ALTER, made by the engine on this event loop,
    holds the table's lock until its COMMIT, which the blocked loop would never send."""
    await poll(lambda: "restored FULL" in " ".join(engine.warnings), 30, "FULL restored")


def identity(conn: Conn) -> str:
    row = conn.execute("SELECT relreplident FROM pg_class WHERE relname = 'docs'").fetchone()
    assert row is not None
    return str(row[0])


def is_toasted(conn: Conn) -> bool:
    """Every big_text is stored out of line (its chunks in the TOAST table)."""
    row = conn.execute("SELECT reltoastrelid::regclass::text FROM pg_class WHERE relname = 'docs'")
    toast = row.fetchone()
    assert toast is not None
    chunks = conn.execute(f"SELECT count(DISTINCT chunk_id) FROM {toast[0]}").fetchone()
    return chunks == (3,)


async def test_toasted_value_missing_from_an_update_loses_only_the_shapes_reading_it(
    engine: Engine, docs: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    assert is_toasted(docs)
    like = await make(engine, "docs", where="big_text LIKE 'A%'")
    at_least = await make(engine, "docs", where="big_text >= 'B'")
    whole = await make(engine, "docs")
    keyed = await make(engine, "docs", where="id >= 2")
    other = await make(engine, "notes")
    docs.execute("ALTER TABLE docs REPLICA IDENTITY DEFAULT")  # a DBA's doing
    with caplog.at_level(logging.WARNING, logger="pysync"):
        # The TOASTed column is unchanged: pgoutput does not send it.
        docs.execute("UPDATE docs SET small = small + 10")
        docs.execute("INSERT INTO notes VALUES (2, 2)")
        docs.execute("UPDATE notes SET v = 20 WHERE id = 1")
        await quiesce(engine, docs)  # replication goes on (it looped on the error before)
        await restored(engine)
    assert like.gone and at_least.gone
    assert "not REPLICA IDENTITY FULL" in like.reason
    for live, where in ((whole, None), (keyed, "id >= 2"), (other, None)):
        equal_to_select(docs, live, where)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum(like.handle in m for m in warnings) == 1, warnings  # logged once
    assert not any(re.search("[0-9a-f]{32}", m) for m in warnings)  # no row values
    # The shapes that resynced are served again, and follow further changes.
    again = await make(engine, "docs", where="big_text LIKE 'A%'")
    docs.execute("UPDATE docs SET big_text = 'A' || big_text WHERE id = 2")
    docs.execute("INSERT INTO notes VALUES (3, 3)")
    await quiesce(engine, docs)
    equal_to_select(docs, again, "big_text LIKE 'A%'")
    equal_to_select(docs, whole)
    equal_to_select(docs, other)


async def test_replica_full_shape_resyncs_rather_than_send_null(engine: Engine, docs: Conn) -> None:
    full = await make(engine, "docs", replica="full")
    moving = await make(engine, "docs", where="small > 3")
    whole = await make(engine, "docs")
    docs.execute("ALTER TABLE docs REPLICA IDENTITY DEFAULT")
    docs.execute("UPDATE docs SET small = 5 WHERE id = 1")  # moves into "small > 3"
    await quiesce(engine, docs)
    await restored(engine)
    assert full.gone and moving.gone
    equal_to_select(docs, whole)
    # No entry of any shape ever carried a null for a value the WAL did not send.
    for entry in read_all(whole.log):
        if "key" in entry:
            assert None not in entry["value"].values(), entry


async def test_delete_without_the_old_row(engine: Engine, docs: Conn) -> None:
    full = await make(engine, "docs", replica="full")
    by_value = await make(engine, "docs", where="small >= 2")
    keyed = await make(engine, "docs", where="id <> 2")
    whole = await make(engine, "docs")
    docs.execute("INSERT INTO docs VALUES (4, 4, 'short')")
    docs.execute("ALTER TABLE docs REPLICA IDENTITY DEFAULT")
    docs.execute("DELETE FROM docs WHERE id = 3")
    docs.execute("UPDATE docs SET id = 10 WHERE id = 4")  # a key change: the old key only
    await quiesce(engine, docs)
    await restored(engine)
    assert full.gone and by_value.gone
    equal_to_select(docs, keyed, "id <> 2")
    equal_to_select(docs, whole)
    # A key change of a row whose TOASTed value is unchanged: the new row lacks it, and
    # its insert under the new key would too. (pysync restored FULL meanwhile.)
    docs.execute("ALTER TABLE docs REPLICA IDENTITY DEFAULT")
    docs.execute("UPDATE docs SET id = 11 WHERE id = 1")
    await quiesce(engine, docs)
    assert keyed.gone and whole.gone
    assert "TOAST" in whole.reason
    await poll(lambda: identity(docs) == "f", 30, "FULL restored again")


# -- failures injected into one shape -------------------------------------------------------


def boom(*args: Any) -> Any:
    raise RuntimeError("injected")


async def test_one_shape_failing_on_a_change_loses_only_itself(
    engine: Engine, docs: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    victim = await make(engine, "docs", where="small < 100")
    same = await make(engine, "docs", where="small < 200")  # same projection: shared entries
    other = await make(engine, "notes")
    docs.execute("UPDATE docs SET small = small + 1 WHERE id = 1")
    await quiesce(engine, docs)
    assert victim.converter is not None
    victim.converter.matches = boom  # type: ignore[union-attr]
    with caplog.at_level(logging.WARNING, logger="pysync"):
        docs.execute("UPDATE docs SET small = small + 1")
        docs.execute("INSERT INTO docs VALUES (4, 4, 'D')")
        docs.execute("UPDATE notes SET v = 5")
        await quiesce(engine, docs)
    assert victim.gone and "RuntimeError" in victim.reason
    assert [r for r in caplog.records if victim.handle in r.getMessage()][0].levelno == (
        logging.WARNING
    )
    equal_to_select(docs, same, "small < 200")
    equal_to_select(docs, other)
    docs.execute("UPDATE docs SET small = small + 1")
    await quiesce(engine, docs)
    equal_to_select(docs, same, "small < 200")


async def test_a_clause_postgres_would_fail_on_a_new_row_resyncs_the_shape(
    engine: Engine, docs: Conn
) -> None:
    """``small * 1000000 > 0`` overflows int4 for small > 2147: Postgres fails the shape's
    query on such a row. The live path neither drops nor keeps the row on a guess: the
    shape is invalidated and its refetch gets Postgres' error."""
    where = "small * 1000000 > 0"
    overflowing = await make(engine, "docs", where=where)
    subquery = await engine.shape(
        ShapeDefinition.create("notes", where=f"id IN (SELECT id FROM docs WHERE {where})")
    )
    await poll(lambda: subquery.state is LIVE, 30, "the subquery shape")
    whole = await make(engine, "docs")
    docs.execute("INSERT INTO docs VALUES (9, 5000, 'x')")
    await quiesce(engine, docs)
    assert overflowing.gone and "WhereRuntimeError" in overflowing.reason
    assert subquery.gone
    equal_to_select(docs, whole)
    again = await engine.shape(ShapeDefinition.create("docs", where=where))
    await poll(lambda: again.state is not SNAPSHOTTING, 30, "the snapshot")
    with pytest.raises(Exception, match="out of range"):
        again.check()


SUBQUERY_SCHEMA = """
CREATE TABLE projects (id int PRIMARY KEY, name text);
CREATE TABLE memberships (user_id int, project_id int, PRIMARY KEY (user_id, project_id));
CREATE TABLE todos (id int PRIMARY KEY, project_id int, title text);
INSERT INTO projects SELECT g, 'p' || g FROM generate_series(1, 4) g;
INSERT INTO memberships VALUES (1, 1), (1, 2), (2, 2), (2, 3), (3, 4);
INSERT INTO todos SELECT g, 1 + g % 4, 'todo ' || g FROM generate_series(1, 40) g;
"""


async def make_tagged(engine: Engine, where: str) -> ShapeConsumer:
    live = await engine.shape(ShapeDefinition.create("todos", where=where))
    await poll(lambda: live.state is LIVE or live.gone, 30, "the snapshot")
    assert not live.gone, live.reason
    return live


def member_of(user: int) -> str:
    return f"project_id IN (SELECT project_id FROM memberships WHERE user_id = {user})"


def check_tagged(conn: Conn, live: ShapeConsumer, where: str) -> None:
    assert not live.gone, live.reason
    client = TaggedClient()
    client.apply_all(read_all(live.log))
    expected = table_state(conn, "public", "todos", ["id", "project_id", "title"], ["id"], where)
    assert client.rows == expected


async def test_subquery_shape_and_dependency_failing_lose_only_their_shapes(
    engine: Engine, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn.execute(SUBQUERY_SCHEMA)
    first = await make_tagged(engine, member_of(1))
    second = await make_tagged(engine, member_of(2))
    third = await make_tagged(engine, member_of(3))
    plain = await make(engine, "todos", where="id > 10")
    conn.execute("UPDATE todos SET title = title || '!' WHERE id = 4")  # project 1
    await quiesce(engine, conn)
    # The first shape's converter fails on every change of its table.
    converter: Any = first.converter
    assert converter is not None
    converter._meta = boom
    conn.execute("UPDATE todos SET title = title || '?'")
    conn.execute("INSERT INTO memberships VALUES (3, 1)")  # a move-in of the third
    await quiesce(engine, conn)
    await poll(lambda: third.subquery is not None and third.subquery.move is None)
    assert first.gone
    check_tagged(conn, second, member_of(2))
    check_tagged(conn, third, member_of(3))
    equal = table_state(conn, "public", "todos", ["id", "project_id", "title"], ["id"], "id > 10")
    assert materialise(read_all(plain.log)) == equal
    # The second shape's dependency fails on a change of its table: its dependents go.
    assert second.subquery is not None
    dependency = second.subquery.deps[0]
    monkeypatch.setattr(dependency, "_apply", boom)
    conn.execute("DELETE FROM memberships WHERE user_id = 2 AND project_id = 3")
    conn.execute("INSERT INTO memberships VALUES (1, 4)")
    conn.execute("UPDATE todos SET title = 'x' WHERE id < 20")
    await quiesce(engine, conn)
    await poll(lambda: third.subquery is not None and third.subquery.move is None)
    assert second.gone and dependency.gone
    check_tagged(conn, third, member_of(3))
    assert materialise(read_all(plain.log)) == table_state(
        conn, "public", "todos", ["id", "project_id", "title"], ["id"], "id > 10"
    )
    # The first one's clients refetch and follow the same clause again.
    again = await make_tagged(engine, member_of(1))
    conn.execute("DELETE FROM memberships WHERE user_id = 1 AND project_id = 1")
    await quiesce(engine, conn)
    await poll(lambda: again.subquery is not None and again.subquery.move is None)
    check_tagged(conn, again, member_of(1))


async def test_replica_identity_is_restored_and_reported(
    engine: Engine, docs: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    like = await make(engine, "docs", where="big_text LIKE 'A%'")
    client = Client(make_api(engine))
    try:
        first = await client.shape(table="docs", where="big_text LIKE 'A%'", offset="-1")
        assert first.status_code == 200 and first.headers["electric-handle"] == like.handle
        assert (await client.raw("/v1/health")).json() == {"status": "active"}
        with caplog.at_level(logging.WARNING, logger="pysync"):
            docs.execute("ALTER TABLE docs REPLICA IDENTITY DEFAULT")
            docs.execute("UPDATE docs SET small = small + 1")
            await quiesce(engine, docs)
            await poll(lambda: identity(docs) == "f", 30, "REPLICA IDENTITY FULL to be restored")
            await poll(lambda: "restored FULL" in " ".join(engine.warnings), 30, "the report")
        assert like.gone
        logged = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
        assert '"public"."docs" is REPLICA IDENTITY DEFAULT, not FULL' in logged
        assert "restored REPLICA IDENTITY FULL on public.docs" in logged
        health = (await client.raw("/v1/health")).json()
        assert health["status"] == "active"
        assert len(health["warnings"]) == 1 and "docs" in health["warnings"][0]
        # Its clients refetch.
        gone = await client.shape(
            table="docs",
            where="big_text LIKE 'A%'",
            offset=first.headers["electric-offset"],
            handle=like.handle,
        )
        assert gone.status_code == 409
        # With FULL back, a row moving into a shape arrives whole (its TOASTed value too).
        moving = await make(engine, "docs", where="small > 3")
        docs.execute("UPDATE docs SET small = 50 WHERE id = 1")
        await quiesce(engine, docs)
        equal_to_select(docs, moving, "small > 3")
        inserted = [e for e in read_all(moving.log) if e.get("headers", {}).get("lsn")]
        assert [len(e["value"]["big_text"]) for e in inserted] == [1 + 32 * 300]
    finally:
        await client.aclose()


async def test_identity_of_a_table_with_virtual_columns_is_left_as_set(
    engine: Engine, conn: Conn
) -> None:
    # The way out docs/operations.md gives when a VIRTUAL column makes Postgres refuse
    # the app's writes under FULL: pysync must not undo it.
    conn.execute("CREATE TABLE priced (id int PRIMARY KEY, price int)")
    conn.execute("INSERT INTO priced VALUES (1, 1)")
    await make(engine, "priced")
    conn.execute(
        "ALTER TABLE priced ADD COLUMN label text GENERATED ALWAYS AS (price::text) VIRTUAL"
    )
    conn.execute("ALTER TABLE priced REPLICA IDENTITY DEFAULT")
    conn.execute("UPDATE priced SET price = 2")
    await quiesce(engine, conn)
    await poll(lambda: "not restored" in " ".join(engine.warnings), 30, "the report")
    row = conn.execute("SELECT relreplident FROM pg_class WHERE relname = 'priced'").fetchone()
    assert row == ("d",)
    conn.execute("UPDATE priced SET price = 3")  # the app's writes keep working
