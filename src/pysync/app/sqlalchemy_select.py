"""A ``select()`` that a shape, or a subquery of one, can be: one table, plain columns,
a WHERE; anything else refused by name."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import elements
from sqlalchemy.sql.selectable import Select

from pysync.shapes.definition import ShapeError


def select_parts(stmt: Select[Any]) -> tuple[sa.Table, list[sa.Column[Any]], Any]:
    """The one table, the plain columns and the WHERE of a ``select()`` that a shape (or a
    subquery of one) can be: anything else is refused by name."""
    refused = [
        name
        for name, present in (
            ("ORDER BY", stmt._order_by_clauses),
            ("LIMIT", stmt._limit_clause is not None),
            ("OFFSET", stmt._offset_clause is not None),
            ("FETCH", stmt._fetch_clause is not None),
            ("GROUP BY", stmt._group_by_clauses),
            ("HAVING", stmt._having_criteria),
            ("DISTINCT", stmt._distinct or stmt._distinct_on),
            ("joins", stmt._setup_joins),
            ("FOR UPDATE", stmt._for_update_arg is not None),
            ("WITH (CTEs)", stmt._independent_ctes),
        )
        if present
    ]
    if refused:
        raise ShapeError(
            "where",
            f"a shape is one table filtered by a WHERE clause; the select() has "
            f"{', '.join(refused)}, which a shape cannot have",
        )
    froms = stmt.get_final_froms()
    if len(froms) != 1 or not isinstance(froms[0], sa.Table):
        names = ", ".join(str(f) for f in froms) or "nothing"
        raise ShapeError(
            "table",
            f"a shape reads exactly one table; the select() reads from {names} "
            "(joins and aliases are not supported)",
        )
    table = froms[0]
    columns: list[sa.Column[Any]] = []
    for column in stmt.selected_columns:
        while isinstance(column, elements.Label):
            column = column.element
        if not isinstance(column, sa.Column) or column.table is not table:
            raise ShapeError(
                "columns", f"a shape selects plain columns of {table.name}, not {column}"
            )
        columns.append(column)
    return table, columns, stmt.whereclause
