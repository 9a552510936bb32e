"""``pysync.shape(...)``: a shape definition from app code, and shape functions.

    pysync.shape("todos", where="owner = $1", params=[user])
    pysync.shape(table="todos", namespace="app", columns=["id", "title"], replica="full")
    pysync.shape(Todo)                                  # ORM class: its table and columns
    pysync.shape(Todo, where=Todo.owner == user)        # ... narrowed by an expression
    pysync.shape(select(Todo.id, Todo.title).where(Todo.done.is_(False)))

Every form gives a ``ShapeDefinition``; one input always gives the same definition, so
the same shape (handle) and the same ``interrupt`` matches.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from pysync.shapes.definition import ShapeDefinition, ShapeError

Params = Sequence[object] | Mapping[int | str, object]

ShapeFunction = Callable[..., Any]
"""``fn(request)`` or ``fn()``, sync or async, returning what ``shape()`` takes."""

SourceConverter = Callable[[object], ShapeDefinition | None]
_converters: list[SourceConverter] = []


def register_source(convert: SourceConverter) -> None:
    """Teach ``shape()`` (and ``interrupt``) another front end's objects: ``convert(obj)``
    is their definition, or None for objects it does not know. A front end (pysync.django
    for QuerySets) registers when it is imported, so this layer imports none of them."""
    if convert not in _converters:
        _converters.append(convert)


def _converted(source: object) -> ShapeDefinition | None:
    for convert in _converters:
        definition = convert(source)
        if definition is not None:
            return definition
    return None


def shape(
    source: object = None,
    /,
    *,
    table: str | None = None,
    namespace: str | None = None,
    where: object = None,
    params: Params | None = None,
    columns: Sequence[str] | None = None,
    replica: str = "default",
    log_mode: str = "full",
    queryable_columns: Sequence[str] | None = None,
) -> ShapeDefinition:
    """A shape definition. ``source`` is a table name (``todos``, ``app."Todos"``), a
    ShapeDefinition, a SQLAlchemy Table, ORM class or ``select()``; or give ``table=``.

    ``where`` is Electric WHERE text with ``$n`` placeholders for ``params`` (a list, or
    a mapping ``{1: value}``), or, with a SQLAlchemy source, an expression. ``columns``
    replaces the source's columns. ``queryable_columns`` (Electric's allow-list) limits
    the columns synced and those subset ``where``/``order_by`` may reference. Raises
    ShapeError naming what cannot be a shape."""
    if isinstance(source, ShapeDefinition):
        if any(
            v is not None for v in (table, namespace, where, params, columns, queryable_columns)
        ):
            raise TypeError("a ShapeDefinition is complete: give table/where/params/columns in it")
        return source
    if source is not None and table is not None:
        raise TypeError("give the table either as the first argument or as table=, not both")
    if source is None:
        source = table
    if source is None:
        raise TypeError("shape() needs a table: a name, a SQLAlchemy Table, ORM class or select()")
    if isinstance(source, str):
        if where is not None and not isinstance(where, str):
            raise ShapeError(
                "where",
                "with a table name, where= is WHERE text (SQLAlchemy expressions need "
                "a Table or ORM class as the shape)",
            )
        return ShapeDefinition.create(
            source,
            namespace=namespace,
            where=where,
            params=params,
            columns=columns,
            replica=replica,
            log_mode=log_mode,
            queryable_columns=queryable_columns,
        )
    converted = _converted(source)
    if converted is not None:
        if any(v is not None for v in (table, namespace, where, params, columns)):
            raise TypeError(f"a {type(source).__name__} is complete: say table/where/columns in it")
        return msgspec.structs.replace(
            converted,
            replica=replica,
            log_mode=log_mode,
            queryable_columns=tuple(queryable_columns) if queryable_columns is not None else None,
        )
    if not uses_sqlalchemy(source):
        raise ShapeError(
            "table",
            f"expected a table name, a ShapeDefinition or a SQLAlchemy Table, ORM class "
            f"or select(), not {type(source).__name__}",
        )
    from pysync.app.sqlalchemy import compile_source

    text: str | None
    if isinstance(where, str):
        compiled = compile_source(source)
        if compiled.where is not None:
            raise ShapeError(
                "where",
                "the select() has a WHERE already: give the condition there, or "
                "as a SQLAlchemy expression in where=",
            )
        text, values = where, params
    else:
        if params is not None:
            raise ShapeError(
                "params", "params= goes with WHERE text; an expression carries its values"
            )
        compiled = compile_source(source, where)
        text, values = compiled.where, list(compiled.params)
    return ShapeDefinition.create(
        compiled.table,
        namespace=namespace or compiled.schema,
        where=text,
        params=values,
        columns=columns if columns is not None else compiled.columns,
        replica=replica,
        log_mode=log_mode,
        queryable_columns=queryable_columns,
    )


def uses_sqlalchemy(obj: object) -> bool:
    """Is ``obj`` a SQLAlchemy object (without importing SQLAlchemy when the app has not)?"""
    if "sqlalchemy" not in sys.modules:
        return False
    from pysync.app.sqlalchemy import is_sqlalchemy

    return is_sqlalchemy(obj)


def is_shape_function(source: object) -> bool:
    """A function defining the shape per request (not a table, definition or ORM class)."""
    return (
        callable(source)
        and not isinstance(source, (str, ShapeDefinition))
        and not uses_sqlalchemy(source)
        and _converted(source) is None
    )


async def call_shape_function(fn: ShapeFunction, request: Request) -> ShapeDefinition:
    """Run a shape function: with the request when it takes an argument; a plain function
    in a worker thread (it may query the database), a coroutine function on the loop."""
    args: tuple[Request, ...] = (request,) if _takes_argument(fn) else ()
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
        result = await fn(*args)
    else:
        result = await run_in_threadpool(fn, *args)
        if inspect.isawaitable(result):
            result = await result
    return shape(result)


def _takes_argument(fn: ShapeFunction) -> bool:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return bool(positional)


def interrupt_target(shape_: object, options: dict[str, Any]) -> tuple[object, dict[str, Any]]:
    """``interrupt``'s arguments with SQLAlchemy forms normalised: an ORM class or Table
    alone stands for its table (every shape on it, as ``interrupt("todos")``); with
    ``where=``/``columns=``, or a ``select()``, for exactly that shape."""
    converted = _converted(shape_)
    if converted is not None:
        if isinstance(shape_, type) and not options:  # a model class: its table, as above
            return None, {"table": converted.table, "namespace": converted.schema}
        return converted, options
    if not uses_sqlalchemy(shape_):
        if uses_sqlalchemy(options.get("where")):
            raise TypeError(
                "a SQLAlchemy where= needs the ORM class or Table as the first argument"
            )
        return shape_, options
    from pysync.app.sqlalchemy import compile_source

    narrowing = {k: v for k, v in options.items() if k not in ("namespace", "replica")}
    if narrowing or not isinstance(shape_, type | _table_type()):
        return shape(shape_, **options), {}
    compiled = compile_source(shape_)
    return None, {"table": compiled.table, "namespace": options.get("namespace") or compiled.schema}


def _table_type() -> type:
    import sqlalchemy

    return sqlalchemy.Table
