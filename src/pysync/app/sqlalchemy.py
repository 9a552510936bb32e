"""Shapes from SQLAlchemy: a ``Table``, an ORM class or a ``select()`` over one table,
with the table, the columns and the WHERE each of them says.

Imported only when a SQLAlchemy object is given (``pip install 'pysync[sqlalchemy]'``).
WHERE expressions are compiled by ``sqlalchemy_where``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import elements
from sqlalchemy.sql.selectable import Select

from pysync.app.sqlalchemy_select import select_parts
from pysync.app.sqlalchemy_where import compile_where
from pysync.shapes.definition import ShapeError


@dataclass(frozen=True)
class Compiled:
    """What a SQLAlchemy source says about a shape."""

    table: str
    schema: str
    where: str | None
    params: tuple[str, ...]
    columns: tuple[str, ...] | None


def is_sqlalchemy(obj: object) -> bool:
    """A Table, an ORM class, a select() or a column expression."""
    if isinstance(obj, type):
        return hasattr(obj, "__mapper__") and hasattr(obj, "__table__")
    return isinstance(obj, (sa.Table, Select, elements.ClauseElement))


def compile_source(source: object, where: object = None) -> Compiled:
    """The table, columns and WHERE of ``source``; ``where`` (an expression) narrows it."""
    if isinstance(source, Select):
        table, columns, clause = _from_select(source)
    else:
        table, columns = table_and_columns(source)
        clause = None
    if where is not None:
        if not isinstance(where, elements.ClauseElement):
            raise ShapeError(
                "where", f"expected a SQLAlchemy expression, not {type(where).__name__}"
            )
        clause = where if clause is None else sa.and_(clause, where)  # type: ignore[arg-type]
    text, params = (None, ()) if clause is None else compile_where(clause, table)
    # SQLAlchemy names are quoted_name (a str subclass): plain str from here on.
    return Compiled(str(table.name), str(table.schema or "public"), text, params, columns)


def table_and_columns(source: object) -> tuple[sa.Table, tuple[str, ...] | None]:
    """A Table (every column it declares) or an ORM class (its mapped columns)."""
    if isinstance(source, sa.Table):
        return source, _declared_columns(source, list(source.columns))
    if isinstance(source, type) and hasattr(source, "__table__"):
        table = source.__table__
        if not isinstance(table, sa.Table):
            raise ShapeError("table", f"{source.__name__} is not mapped to one table")
        mapper: Any = sa.inspect(source)
        mapped = [c for c in mapper.columns if isinstance(c, sa.Column) and c.table is table]
        return table, _declared_columns(table, mapped)
    raise ShapeError(
        "table",
        f"expected a table name, a SQLAlchemy Table, an ORM class or a select(), "
        f"not {type(source).__name__}",
    )


def _declared_columns(table: sa.Table, columns: Sequence[sa.Column[Any]]) -> tuple[str, ...]:
    # Generated columns cannot be part of a shape (Electric's rule): leave them out.
    names = tuple(str(c.name) for c in columns if c.computed is None)
    _check_keys(table, names)
    return names


def _check_keys(table: sa.Table, names: Sequence[str]) -> None:
    missing = [c.name for c in table.primary_key.columns if c.name not in names]
    if missing:
        raise ShapeError(
            "columns",
            f"the columns of a shape must include the primary key of {table.name}: "
            f"missing {', '.join(missing)}",
        )


def _from_select(stmt: Select[Any]) -> tuple[sa.Table, tuple[str, ...] | None, Any]:
    table, columns, where = select_parts(stmt)
    selected = [str(c.name) for c in columns if c.computed is None]
    _check_keys(table, selected)
    return table, tuple(selected), where
