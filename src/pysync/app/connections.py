"""Running a write batch on what the app has: a psycopg (async) connection, or a
SQLAlchemy (async) Session or Connection on the ``postgresql+psycopg`` driver.

The batch itself is a generator of steps (``Query``, ``Await``, ``Flush``), written once;
a sync and an async driver run it. SQLAlchemy is imported only when a SQLAlchemy object
is passed, so it stays an optional dependency (``pysync[sqlalchemy]``). Statements go
to the session's own psycopg connection, inside the session's transaction.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Generator, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

import psycopg
from psycopg import sql


class Query(NamedTuple):
    """Run a statement; the driver sends back its rows (``[]`` when it returns none)."""

    statement: sql.Composed | sql.SQL
    params: Sequence[Any]


class Await(NamedTuple):
    """A callback returned an awaitable: the async driver sends back its result."""

    awaitable: Awaitable[Any]


class Flush(NamedTuple):
    """Flush the SQLAlchemy session (what callbacks added through the ORM), if any."""


Step = Query | Await | Flush
T = TypeVar("T")
Steps = Generator[Step, Any, T]
Batch = Steps[int]

_DRIVER = "a SQLAlchemy engine on the psycopg 3 driver (postgresql+psycopg://...)"


def _is_sqlalchemy(connection: object) -> bool:
    return type(connection).__module__.startswith("sqlalchemy.")


def _psycopg_of(raw: Any, kind: type) -> Any:
    driver = getattr(raw, "driver_connection", raw)
    if not isinstance(driver, kind):
        raise TypeError(
            f"pysync.Writer writes through psycopg 3: use {_DRIVER}, not {type(driver).__name__}"
        )
    return driver


@contextlib.contextmanager
def sync_transaction(connection: Any) -> Iterator[tuple[psycopg.Connection[Any], Any]]:
    """A transaction (a savepoint inside one already open) on ``connection``; yields the
    psycopg connection and the session to flush (or None)."""
    if isinstance(connection, psycopg.Connection):
        with connection.transaction():
            yield connection, None
        return
    if not _is_sqlalchemy(connection) or not hasattr(connection, "begin_nested"):
        raise TypeError(
            f"expected a psycopg.Connection or a SQLAlchemy Session, got {type(connection).__name__}"
        )
    from sqlalchemy.orm import Session

    transaction = connection.begin_nested() if connection.in_transaction() else connection.begin()
    with transaction:
        if isinstance(connection, Session):
            raw = connection.connection().connection
            yield _psycopg_of(raw, psycopg.Connection), connection
        else:  # a Core Connection
            yield _psycopg_of(connection.connection, psycopg.Connection), None


@contextlib.asynccontextmanager
async def async_transaction(
    connection: Any,
) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], Any]]:
    if isinstance(connection, psycopg.AsyncConnection):
        async with connection.transaction():
            yield connection, None
        return
    if not _is_sqlalchemy(connection) or not hasattr(connection, "begin_nested"):
        raise TypeError(
            f"expected a psycopg.AsyncConnection or a SQLAlchemy AsyncSession, got {type(connection).__name__}"
        )
    from sqlalchemy.ext.asyncio import AsyncSession

    transaction = connection.begin_nested() if connection.in_transaction() else connection.begin()
    async with transaction:
        core = await connection.connection() if isinstance(connection, AsyncSession) else connection
        raw = await core.get_raw_connection()
        yield (
            _psycopg_of(raw, psycopg.AsyncConnection),
            connection if isinstance(connection, AsyncSession) else None,
        )


def run_sync(batch: Batch, connection: psycopg.Connection[Any], session: Any) -> int:
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = batch.send(value) if error is None else batch.throw(error)
        except StopIteration as stop:
            return int(stop.value)
        value, error = None, None
        try:
            if isinstance(step, Query):
                cursor = connection.execute(step.statement, step.params)
                value = cursor.fetchall() if cursor.description is not None else []
            elif isinstance(step, Flush):
                if session is not None:
                    session.flush()
            else:
                if inspect.iscoroutine(step.awaitable):
                    step.awaitable.close()
                raise RuntimeError(
                    "an async callback needs an async connection: use Writer.apply_async"
                )
        except Exception as exc:  # handed to the batch, which names the mutation
            error = exc


async def run_async(batch: Batch, connection: psycopg.AsyncConnection[Any], session: Any) -> int:
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = batch.send(value) if error is None else batch.throw(error)
        except StopIteration as stop:
            return int(stop.value)
        value, error = None, None
        try:
            if isinstance(step, Query):
                cursor = await connection.execute(step.statement, step.params)
                value = await cursor.fetchall() if cursor.description is not None else []
            elif isinstance(step, Flush):
                if session is not None:
                    await session.flush()
            else:
                value = await step.awaitable
        except Exception as exc:
            error = exc
