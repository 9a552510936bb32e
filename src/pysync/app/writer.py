"""``pysync.Writer``: apply a client's batch of mutations in one Postgres transaction and
return its transaction id, which the client then awaits in the shape's change messages
(the ``txids`` header). Modelled on ``Phoenix.Sync.Writer``::

    def mine(m: pysync.Mutation) -> bool:  # m.data: the row as stored, {} for an insert
        return m.data.get("owner", user) == user and m.changes.get("owner", user) == user

    writer = pysync.Writer().allow(
        "todos",
        check=mine,                                              # or a reason (str) to refuse
        validate=lambda ctx: {**ctx.values, "owner": user},      # the values to write
    )
    txid = writer.apply(mutations, conn)                # psycopg or SQLAlchemy Session
    txid = await writer.apply_async(mutations, aconn)   # psycopg async or AsyncSession
    return await writer.handle(request)                 # a Starlette/FastAPI endpoint

A batch is applied whole or not at all: the first mutation that fails rolls it back and
raises MutationError (403 MutationForbidden, 404 MutationNotFound, 422 MutationInvalid)
naming its index.

Every mutation's table must be allowed and its operation accepted before the transaction
starts. Then in the transaction, for each mutation in order: ``load`` (updates,
deletes: the stored row, by default ``SELECT ... FOR UPDATE`` by the primary key of the
client's ``original``; no such row is a 404), ``check``, ``validate`` (the values to
write), ``pre_apply``, the statement (or the custom ``insert`` / ``update`` / ``delete``
function), ``post_apply``.

The rules judge the row in the database, never what the client says it was: once loaded
(and locked), the stored row is ``mutation.data`` for ``check`` and ``ctx.row`` /
``ctx.mutation.data`` for the callbacks; of the client's ``original`` only the primary key
is used, to find the row. As Phoenix.Sync's Writer loads the row before its changeset
runs. An update may not change the primary key (403). Callbacks get a WriteContext; with
``apply_async`` they (and ``check``) may be coroutines.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pysync.app import statements
from pysync.app.columns import (
    COLUMNS_QUERY,
    WriteColumn,
    WriteTable,
    input_text,
    row_key,
    table_from_rows,
)
from pysync.app.connections import (
    Await,
    Batch,
    Flush,
    Query,
    Steps,
    async_transaction,
    run_async,
    run_sync,
    sync_transaction,
)
from pysync.app.mutation import (
    OPERATIONS,
    Format,
    Mutation,
    MutationError,
    MutationForbidden,
    MutationInvalid,
    MutationNotFound,
    Operation,
)
from pysync.app.tanstack import TanstackDB
from pysync.config import connection_from_env
from pysync.http.bodies import read_body
from pysync.http.errors import ShapeAPIError
from pysync.postgres.conninfo import merge
from pysync.postgres.identifiers import IdentifierError, parse_relation

TXID_QUERY = sql.SQL("SELECT pg_current_xact_id()::xid::text")
"""The 32-bit xid, as pgoutput's BEGIN (and so the ``txids`` header) carries it."""

MAX_BODY = 4 * 1024 * 1024
"""The largest request body ``handle`` reads."""

SYSTEM_SCHEMAS = ("information_schema",)


def _system(schema: str) -> bool:
    return schema.startswith("pg_") or schema in SYSTEM_SCHEMAS


class WriteContext:
    """What a callback sees of the mutation being applied."""

    def __init__(self, mutation: Mutation, table: WriteTable, connection: Any, txid: int) -> None:
        self.mutation = mutation
        """The mutation; once the row of an update or delete is loaded, its ``data`` is
        that stored row, not the client's ``original``."""
        self.table = table
        self.connection = connection
        """The connection or session the batch was applied with (for custom SQL)."""
        self.txid = txid
        self.row: dict[str, Any] | None = None
        """The stored row (updates, deletes), as ``load`` returned it (locked by the
        default ``load``)."""
        self.values: dict[str, Any] = dict(mutation.changes)
        """What will be written (inserts, updates); ``validate`` may replace it."""
        self._key: dict[str, Any] | None = None

    @property
    def operation(self) -> Operation:
        return self.mutation.operation

    @property
    def index(self) -> int:
        return self.mutation.index

    @property
    def key(self) -> dict[str, Any]:
        """The primary key of the row an update or delete targets (from the client's
        ``original``: what ``load`` looks up and the statement's WHERE)."""
        if self._key is None:
            try:
                self._key = row_key(self.table, self.mutation.data)
            except ValueError as exc:
                raise MutationInvalid(str(exc), self.index) from None
        return self._key


Callback = Callable[..., Any]


class TableRules:
    """What ``Writer.allow`` registered for one table."""

    def __init__(
        self,
        relation: tuple[str, str],
        *,
        accept: Collection[Operation],
        check: Callback | None,
        load: Callback | None,
        validate: Callback | type | None,
        pre_apply: Callback | None,
        post_apply: Callback | None,
        insert: Callback | None,
        update: Callback | None,
        delete: Callback | None,
    ) -> None:
        unknown = set(accept) - set(OPERATIONS)
        if unknown:
            raise ValueError(
                f"accept: unknown operations {sorted(unknown)}; use insert, update, delete"
            )
        self.relation = relation
        self.accept = frozenset(accept)
        self.check = check
        self.load = load
        self.validate = _model_validator(validate) if isinstance(validate, type) else validate
        self.pre_apply = pre_apply
        self.post_apply = post_apply
        self.custom: dict[str, Callback | None] = {
            "insert": insert,
            "update": update,
            "delete": delete,
        }


class Writer:
    """Accepts writes to the tables named with ``allow`` (and no others)."""

    def __init__(self, *, format: Format | None = None, database_url: str | None = None) -> None:
        self.format: Format = format if format is not None else TanstackDB()
        self.database_url = database_url
        """Where ``handle`` connects when it is given no connection."""
        self.connection_settings = connection_from_env()
        """What ``handle``'s connections take (TLS, TCP keepalives): by default those of
        the environment (``PYSYNC_DATABASE_*`` / ``ELECTRIC_DATABASE_*``), as ``Sync``'s."""
        self.rules: dict[tuple[str, str], TableRules] = {}

    def allow(
        self,
        table: str | type,
        *,
        accept: Collection[Operation] = OPERATIONS,
        check: Callback | None = None,
        load: Callback | None = None,
        validate: Callback | type | None = None,
        pre_apply: Callback | None = None,
        post_apply: Callback | None = None,
        insert: Callback | None = None,
        update: Callback | None = None,
        delete: Callback | None = None,
    ) -> Writer:
        """Accept writes to ``table``: a name (``todos``, ``app."Todos"``) or a SQLAlchemy
        model class. Returns the writer, for chaining.

        * ``load(ctx)``: the stored row of an update or delete, by ``ctx.key`` (None: no
          such row, 404). The default selects it ``FOR UPDATE``; a custom one should lock
          it too.
        * ``check(mutation)``: ``mutation.data`` is the stored row (``{}`` for an insert),
          ``mutation.changes`` what the client writes; return False or a reason (str), or
          raise MutationForbidden, to refuse (403).
        * ``validate(ctx)``: the values to write (None keeps ``ctx.values``); raise
          ValueError or MutationInvalid to refuse (422). A SQLAlchemy model class
          validates by constructing an instance (its ``@validates`` hooks run).
        * ``pre_apply(ctx)`` / ``post_apply(ctx)``: around the write, same transaction.
        * ``insert(ctx)`` / ``update(ctx)`` / ``delete(ctx)``: write it yourself through
          ``ctx.connection`` instead of the default statement.
        """
        relation = _relation_of(table)
        if _system(relation[0]):
            raise ValueError(f"writes to the system schema {relation[0]} are never allowed")
        self.rules[relation] = TableRules(
            relation,
            accept=accept,
            check=check,
            load=load,
            validate=validate,
            pre_apply=pre_apply,
            post_apply=post_apply,
            insert=insert,
            update=update,
            delete=delete,
        )
        return self

    def parse(self, payload: Any) -> list[tuple[Mutation, TableRules]]:
        """The batch's mutations with their table's rules, every table allowed and
        operation accepted; no database access (``check`` runs in the transaction, on the
        stored row). Raises MutationError."""
        mutations = self.format.parse(payload)
        return [(mutation, self._rules_for(mutation)) for mutation in mutations]

    def apply(self, payload: Any, connection: Any) -> int:
        """Apply the batch through a psycopg Connection or a SQLAlchemy Session (or
        Connection) on psycopg; its transaction id. In a transaction already open the
        batch runs in a savepoint, and committing it is the caller's."""
        batch = self.parse(payload)
        with sync_transaction(connection) as (conn, session):
            return run_sync(self._batch(batch, connection), conn, session)

    async def apply_async(self, payload: Any, connection: Any) -> int:
        """As ``apply``, through a psycopg AsyncConnection or a SQLAlchemy AsyncSession."""
        batch = self.parse(payload)
        async with async_transaction(connection) as (conn, session):
            return await run_async(self._batch(batch, connection), conn, session)

    async def handle(self, request: Request, connection: Any = None) -> Response:
        """A ready endpoint: POST the batch (``content-type: application/json``), get
        ``{"txid": n}``; or 400/403/404/422 with ``{"message", "mutation", "reason"}``.
        Writes through ``connection`` (an async psycopg connection or AsyncSession),
        else a new connection to ``database_url``.

        Only JSON is read: a browser sends a cross-site form post (which needs no CORS
        preflight) with the user's cookies, so any other content type is a 415."""
        if request.method != "POST":
            return JSONResponse({"message": "Method not allowed, POST the mutations"}, 405)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return JSONResponse(
                {"message": "Unsupported media type: POST the mutations as application/json"},
                415,
            )
        try:
            body = await read_body(request, MAX_BODY)
        except ShapeAPIError as exc:  # too large, or the client left before its end
            message = exc.body.get("error", "") if isinstance(exc.body, Mapping) else ""
            if exc.status == 413:
                message = f"Request body too large (max {MAX_BODY} bytes)"
            return JSONResponse({"message": message}, exc.status)
        try:
            if connection is not None:
                txid = await self.apply_async(body, connection)
            elif self.database_url is None:
                raise TypeError("Writer.handle needs a connection, or Writer(database_url=...)")
            else:
                # A session for one request: nothing to gain from preparing, and behind
                # a transaction pooler (PgBouncer) a statement psycopg prepared would
                # stay on the server connection, where the next request's collides.
                conninfo = merge(self.database_url, self.connection_settings)
                async with await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True, prepare_threshold=None
                ) as conn:
                    txid = await self.apply_async(body, conn)
        except MutationError as exc:
            return JSONResponse(exc.body(), exc.status)
        return JSONResponse({"txid": txid})

    def _rules_for(self, mutation: Mutation) -> TableRules:
        relation = mutation.relation
        if isinstance(relation, str):
            try:
                relation = parse_relation(relation)
            except IdentifierError as exc:
                raise MutationError(f"relation: {exc}", mutation.index) from None
        if _system(relation[0]):
            raise MutationForbidden(
                f"writes to the system schema {relation[0]} are never allowed", mutation.index
            )
        rules = self.rules.get(relation)
        if rules is None:
            raise MutationForbidden(f"writes to {_name(relation)} are not allowed", mutation.index)
        if mutation.operation not in rules.accept:
            raise MutationForbidden(
                f"{mutation.operation} is not accepted on {_name(relation)}", mutation.index
            )
        return rules

    def _batch(self, batch: list[tuple[Mutation, TableRules]], connection: Any) -> Batch:
        rows = yield Query(TXID_QUERY, ())
        txid = int(rows[0][0])
        tables: dict[tuple[str, str], WriteTable] = {}
        for mutation, rules in batch:
            try:
                table = tables.get(rules.relation)
                if table is None:
                    rows = yield Query(sql.SQL(COLUMNS_QUERY), rules.relation)
                    table = table_from_rows(*rules.relation, rows)
                    if table is None:
                        raise MutationInvalid(f"table {_name(rules.relation)} does not exist")
                    tables[rules.relation] = table
                yield from self._mutation(WriteContext(mutation, table, connection, txid), rules)
            except MutationError as exc:
                raise exc.at(mutation.index) from None
            except ValueError as exc:  # from validate, a model's @validates, or the values
                raise MutationInvalid(str(exc), mutation.index) from None
            except Exception as exc:
                refused = _refused_by_postgres(exc)
                if refused is None:
                    raise
                raise MutationInvalid(refused, mutation.index) from None
        return txid

    def _mutation(self, ctx: WriteContext, rules: TableRules) -> Steps[None]:
        operation = ctx.operation
        if operation != "insert":
            key = ctx.key  # from the client's original, before data becomes the stored row
            ctx.row = row = yield from self._load(ctx, rules)
            ctx.mutation = msgspec.structs.replace(ctx.mutation, data=row)
            if operation == "update":
                _check_key_kept(ctx.table, key, ctx.values)
        if rules.check is not None:
            verdict = yield from _call(rules.check, ctx.mutation)
            if verdict is False or isinstance(verdict, str):
                raise MutationForbidden(verdict or "refused by check")
        if operation != "delete" and rules.validate is not None:
            values = yield from _call(rules.validate, ctx)
            if values is not None:
                if not isinstance(values, Mapping):
                    raise TypeError(
                        f"validate returned {type(values).__name__}, not a mapping of values"
                    )
                ctx.values = dict(values)
        if operation != "delete":
            _check_columns(ctx.table, ctx.values)
        if rules.pre_apply is not None:
            yield from _call(rules.pre_apply, ctx)
            yield Flush()
        custom = rules.custom[operation]
        if custom is not None:
            yield from _call(custom, ctx)
            yield Flush()
        elif operation == "insert":
            yield Query(*statements.insert(ctx.table, ctx.values))
        elif operation == "delete" or ctx.values:
            if operation == "update":
                written = yield Query(*statements.update(ctx.table, ctx.key, ctx.values))
            else:
                written = yield Query(*statements.delete(ctx.table, ctx.key))
            if not written:  # a custom load found a row the key does not name
                raise MutationNotFound(_no_row(ctx))
        if rules.post_apply is not None:
            yield from _call(rules.post_apply, ctx)
            yield Flush()

    def _load(self, ctx: WriteContext, rules: TableRules) -> Steps[dict[str, Any]]:
        if rules.load is not None:
            row = yield from _call(rules.load, ctx)
        else:
            statement, params = statements.select_row(ctx.table, ctx.key)
            rows = yield Query(statement, params)
            row = dict(zip(ctx.table.columns, rows[0], strict=True)) if rows else None
        if row is not None and not isinstance(row, Mapping):
            raise TypeError(f"load returned {type(row).__name__}, not a row (a mapping) or None")
        if row is None:
            raise MutationNotFound(_no_row(ctx))
        return dict(row)


def _call(callback: Callback, *args: Any) -> Steps[Any]:
    result = callback(*args)
    if inspect.isawaitable(result):
        result = yield Await(result)
    return result


def _no_row(ctx: WriteContext) -> str:
    return f"no row in {_name(ctx.table.relation)} with key {_show(ctx.key)}"


def _check_key_kept(table: WriteTable, key: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """An update writes to the row it names: a primary key column in its changes must
    keep its value (a client sending the whole row repeats it)."""
    for name in table.primary_key:
        if name in values and not _same(table.columns[name], values[name], key[name]):
            raise MutationForbidden(f"an update cannot change the primary key (column {name!r})")


def _same(column: WriteColumn, value: Any, other: Any) -> bool:
    try:
        return bool(input_text(column, value) == input_text(column, other))
    except ValueError:
        return False


def _check_columns(table: WriteTable, values: Mapping[str, Any]) -> None:
    for name in values:
        column = table.columns.get(name)
        if column is None:
            raise MutationInvalid(f"no column {name!r} in {_name(table.relation)}")
        if column.generated:
            raise MutationInvalid(f"column {name!r} is generated and cannot be written")


def _refused_by_postgres(exc: BaseException) -> str | None:
    """The message of an error that rejects the client's values (constraints, bad input,
    a trigger's RAISE); None for anything else (a bug, a lost connection: re-raised)."""
    error = exc if isinstance(exc, psycopg.Error) else getattr(exc, "orig", None)
    if isinstance(error, (psycopg.IntegrityError, psycopg.DataError, pg_errors.RaiseException)):
        diag = error.diag
        return str(diag.message_primary or error) + (
            f" ({diag.message_detail})" if diag.message_detail else ""
        )
    return None


def _relation_of(table: str | type) -> tuple[str, str]:
    if isinstance(table, str):
        return parse_relation(table)
    sa_table = getattr(table, "__table__", None)
    if sa_table is None or not isinstance(getattr(sa_table, "name", None), str):
        raise TypeError(f"allow() takes a table name or a SQLAlchemy model class, got {table!r}")
    return (sa_table.schema or "public", sa_table.name)


def _model_validator(model: type) -> Callback:
    """Validate by building ``model(**values)`` (the stored row merged in for updates):
    the values written are read back from the instance, so ``@validates`` hooks may
    normalise them."""
    from sqlalchemy import inspect as sa_inspect

    mapper: Any = sa_inspect(model)
    attribute = {
        column.name: mapper.get_property_by_column(column).key for column in mapper.columns
    }

    def validate(ctx: WriteContext) -> dict[str, Any]:
        fields = {**(ctx.row or {}), **ctx.values}
        unknown = [name for name in fields if name not in attribute]
        if unknown:
            raise MutationInvalid(f"no column {unknown[0]!r} in {model.__name__}")
        instance = model(**{attribute[name]: value for name, value in fields.items()})
        return {name: getattr(instance, attribute[name]) for name in ctx.values}

    return validate


def _name(relation: tuple[str, str]) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in relation)


def _show(key: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in key.items())[:200]
