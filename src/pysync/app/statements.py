"""The default statements of a write: identifiers quoted by psycopg, values bound as
parameters and cast to each column's type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import sql

from pysync.app.columns import WriteTable, input_text

Statement = tuple[sql.Composed, list[Any]]


def _value(table: WriteTable, name: str, value: Any, params: list[Any]) -> sql.Composed:
    column = table.columns[name]
    try:
        params.append(input_text(column, value))
    except ValueError as exc:
        raise ValueError(f"column {name!r}: {exc}") from None
    return sql.SQL("{}::{}").format(sql.Placeholder(), sql.Identifier(*column.cast))


def _where(table: WriteTable, key: Mapping[str, Any], params: list[Any]) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), _value(table, name, value, params))
        for name, value in key.items()
    )


def _relation(table: WriteTable) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name)


def select_row(table: WriteTable, key: Mapping[str, Any]) -> Statement:
    """The row with ``key``, locked until the transaction ends."""
    params: list[Any] = []
    where = _where(table, key, params)
    return sql.SQL("SELECT * FROM {} WHERE {} FOR UPDATE").format(_relation(table), where), params


def insert(table: WriteTable, values: Mapping[str, Any]) -> Statement:
    params: list[Any] = []
    if not values:
        return sql.SQL("INSERT INTO {} DEFAULT VALUES").format(_relation(table)), params
    names = sql.SQL(", ").join(sql.Identifier(name) for name in values)
    placeholders = sql.SQL(", ").join(
        _value(table, name, value, params) for name, value in values.items()
    )
    return sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        _relation(table), names, placeholders
    ), params


def update(table: WriteTable, key: Mapping[str, Any], values: Mapping[str, Any]) -> Statement:
    params: list[Any] = []
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), _value(table, name, value, params))
        for name, value in values.items()
    )
    where = _where(table, key, params)
    return sql.SQL("UPDATE {} SET {} WHERE {} RETURNING 1").format(
        _relation(table), assignments, where
    ), params


def delete(table: WriteTable, key: Mapping[str, Any]) -> Statement:
    params: list[Any] = []
    where = _where(table, key, params)
    return sql.SQL("DELETE FROM {} WHERE {} RETURNING 1").format(_relation(table), where), params
