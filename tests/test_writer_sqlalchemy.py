"""``pysync.Writer`` through SQLAlchemy: a Session and an AsyncSession on the psycopg 3
driver, a model as the allowed table and as the validator, ORM writes in callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import ForeignKey, create_engine, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, validates

from pysync import (
    Mutation,
    MutationError,
    MutationForbidden,
    MutationInvalid,
    WriteContext,
    Writer,
)

Conn = psycopg.Connection[tuple[Any, ...]]


class Base(DeclarativeBase):
    pass


class Todo(Base):
    __tablename__ = "todos"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    done: Mapped[bool] = mapped_column(default=False)

    @validates("title")
    def check_title(self, _key: str, title: str) -> str:
        if not title.strip():
            raise ValueError("title must not be blank")
        return title.strip()  # normalised: the writer writes what the model holds


class Audit(Base):
    __tablename__ = "audit"
    n: Mapped[int] = mapped_column(primary_key=True)
    todo_id: Mapped[int] = mapped_column(ForeignKey("todos.id"))
    what: Mapped[str]


def todo(kind: str, id_: int, **values: Any) -> dict[str, Any]:
    relation = {"syncMetadata": {"relation": ["public", "todos"]}}
    if kind == "insert":
        return {"type": "insert", "modified": {"id": id_, **values}, **relation}
    return {"type": kind, "original": {"id": id_}, "changes": values, **relation}


@pytest.fixture
def sa_url(database_url: str, conn: Conn) -> Iterator[str]:
    conn.execute(
        "CREATE TABLE todos (id int PRIMARY KEY, title text NOT NULL, done bool NOT NULL DEFAULT false)"
    )
    conn.execute(
        "CREATE TABLE audit (n serial PRIMARY KEY, todo_id int REFERENCES todos, what text NOT NULL)"
    )
    conn.execute("INSERT INTO todos VALUES (1, 'one', false)")
    yield database_url.replace("postgresql://", "postgresql+psycopg://", 1)


def audit_insert(ctx: WriteContext) -> None:
    session: Session = ctx.connection
    todo_id = ctx.values["id"] if ctx.operation == "insert" else ctx.key["id"]
    session.add(Audit(todo_id=todo_id, what=f"{ctx.operation} {ctx.txid}"))


def xmin_of(conn: Conn, id_: int) -> int:
    row = conn.execute("SELECT xmin::text FROM todos WHERE id = %s", (id_,)).fetchone()
    assert row is not None
    return int(row[0])


def test_session_with_model_validation_and_orm_callbacks(sa_url: str, conn: Conn) -> None:
    engine = create_engine(sa_url)
    writer = Writer().allow(
        Todo, validate=Todo, post_apply=audit_insert, accept=["insert", "update"]
    )
    try:
        with Session(engine) as session:
            txid = writer.apply(
                [todo("insert", 2, title="  two  "), todo("update", 1, done=True)], session
            )
        assert conn.execute("SELECT * FROM todos ORDER BY id").fetchall() == [
            (1, "one", True),
            (2, "two", False),
        ]
        assert conn.execute("SELECT todo_id, what FROM audit ORDER BY n").fetchall() == [
            (2, f"insert {txid}"),
            (1, f"update {txid}"),
        ]
        assert xmin_of(conn, 2) == txid

        with Session(engine) as session:
            with pytest.raises(MutationInvalid) as caught:
                writer.apply(
                    [todo("insert", 3, title="three"), todo("update", 2, title=" ")], session
                )
            assert (caught.value.index, caught.value.reason) == (1, "title must not be blank")
            with pytest.raises(MutationForbidden) as refused:  # an update keeps its row's key
                writer.apply([todo("insert", 4, title="four"), todo("update", 1, id=5)], session)
            assert refused.value.index == 1 and "primary key" in refused.value.reason
            orphan = Writer().allow(
                Todo, post_apply=lambda ctx: ctx.connection.add(Audit(todo_id=99, what="x"))
            )
            with pytest.raises(MutationInvalid) as caught:  # the ORM's flush fails: attributed too
                orphan.apply([todo("insert", 4, title="four")], session)
            assert caught.value.index == 0 and "foreign key" in caught.value.reason
            with pytest.raises(MutationInvalid, match="no column 'color' in Todo"):
                writer.apply([todo("insert", 3, title="x", color="red")], session)
            # The session is usable afterwards, and nothing of the failed batches is there.
            assert session.scalars(select(Todo.id).order_by(Todo.id)).all() == [1, 2]

        with Session(
            engine
        ) as session:  # a transaction already open: a savepoint, the caller commits
            session.add(Todo(id=10, title="ten"))
            session.flush()
            txid = writer.apply([todo("insert", 11, title="eleven")], session)
            assert conn.execute("SELECT count(*) FROM todos WHERE id = 11").fetchone() == (0,)
            session.commit()
        assert xmin_of(conn, 10) == txid  # the top-level xid (row 11 was written by the savepoint)
    finally:
        engine.dispose()


def test_async_session(sa_url: str, conn: Conn) -> None:
    async def main() -> int:
        engine = create_async_engine(sa_url)

        async def post_apply(ctx: WriteContext) -> None:
            session: AsyncSession = ctx.connection
            session.add(Audit(todo_id=ctx.values.get("id", 1), what=ctx.operation))

        writer = Writer().allow(Todo, validate=Todo, post_apply=post_apply)
        try:
            async with AsyncSession(engine) as session:
                txid = await writer.apply_async(
                    [todo("insert", 2, title="two"), todo("update", 1, title=" uno ")], session
                )
                with pytest.raises(MutationInvalid) as caught:
                    await writer.apply_async(
                        [todo("insert", 3, title="x"), todo("insert", 1, title="dup")], session
                    )
                assert caught.value.index == 1 and "duplicate key" in caught.value.reason
            return txid
        finally:
            await engine.dispose()

    txid = asyncio.run(main())
    assert conn.execute("SELECT * FROM todos ORDER BY id").fetchall() == [
        (1, "uno", False),
        (2, "two", False),
    ]
    assert conn.execute("SELECT todo_id, what FROM audit ORDER BY n").fetchall() == [
        (2, "insert"),
        (1, "update"),
    ]
    assert xmin_of(conn, 2) == txid


def test_other_drivers_are_refused(sa_url: str) -> None:
    with pytest.raises(TypeError, match="psycopg.Connection or a SQLAlchemy Session"):
        Writer().allow("todos").apply([todo("insert", 2, title="t")], object())
    with pytest.raises(TypeError, match="model class"):
        Writer().allow(object)


def test_sqlalchemy_is_not_imported_by_pysync() -> None:
    import subprocess
    import sys

    code = "import sys, pysync; pysync.Writer().allow('todos'); print('sqlalchemy' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr


def test_rules_judge_the_stored_row_through_sessions(sa_url: str, conn: Conn) -> None:
    conn.execute("ALTER TABLE todos ADD COLUMN owner text")
    conn.execute("UPDATE todos SET owner = 'bob'")
    conn.execute("INSERT INTO todos VALUES (2, 'two', false, 'ann')")

    def own(mutation: Mutation) -> str | None:
        if (
            mutation.data.get("owner", "ann") != "ann"
            or mutation.changes.get("owner", "ann") != "ann"
        ):
            return "not your todo"
        return None

    writer = Writer().allow("todos", check=own)
    lies = {"original": {"id": 1, "owner": "ann"}}  # todo 1 is Bob's
    attacks = [
        {**todo("update", 1, title="mine now"), **lies},
        {**todo("delete", 1), **lies},
        todo("update", 2, owner="bob"),
        todo("update", 2, id=3),
        todo("delete", 9),
    ]
    statuses = [403, 403, 403, 403, 404]
    before = conn.execute("SELECT * FROM todos ORDER BY id").fetchall()
    engine = create_engine(sa_url)
    try:
        for attack, status in zip(attacks, statuses, strict=True):
            with Session(engine) as session, pytest.raises(MutationError) as caught:
                writer.apply([todo("update", 2, title="fine"), attack], session)
            assert (caught.value.status, caught.value.index) == (status, 1), attack
    finally:
        engine.dispose()

    async def main() -> list[int]:
        async_engine = create_async_engine(sa_url)
        refused = []
        try:
            for attack in attacks:
                async with AsyncSession(async_engine) as session:
                    try:
                        await writer.apply_async([attack], session)
                    except MutationError as exc:
                        refused.append(exc.status)
        finally:
            await async_engine.dispose()
        return refused

    assert asyncio.run(main()) == statuses
    assert conn.execute("SELECT * FROM todos ORDER BY id").fetchall() == before
