"""The row-JSON SQL of snapshots and subsets: each row becomes one Electric change
message (key, value of the selected columns, headers) in SQL, as Electric's
``querying.ex`` does, so rows stream from Postgres straight into a shape log.
"""

from __future__ import annotations

import msgspec
from psycopg import sql

from pysync.postgres.catalog import Table
from pysync.shapes.changes import relation_prefix
from pysync.shapes.definition import Shape


def _plain_key_column(table: Table, name: str) -> bool:
    column = table.column(name)
    return column is not None and column.dims == 0 and (
        column.type_name in ("int2", "int4", "int8", "numeric", "uuid", "oid")
    )


def _column_text(table: Table, name: str) -> sql.Composable:
    """The column in its type's output format, as pgoutput sends it.

    ``::text`` differs from the output function for bool (``true`` vs ``t``) and bpchar
    (which drops the padding); ``format('%s')`` calls the output function. But
    ``format('%s', NULL)`` is ``''``, not NULL: without the CASE a NULL bool/bpchar
    became ``""`` in values and ``/""`` instead of ``/_`` in keys of PK-less tables,
    disagreeing with what replication sends for the same row.
    """
    column = table.column(name)
    ident = sql.Identifier(name)
    if column is not None and column.dims == 0 and column.type_name in ("bool", "bpchar"):
        return sql.SQL("CASE WHEN {0} IS NULL THEN NULL ELSE format('%%s', {0}) END").format(ident)
    return sql.SQL("{}::text").format(ident)


class OrderBy(msgspec.Struct, frozen=True):
    column: str
    descending: bool = False
    nulls_first: bool | None = None


def row_json_query(
    shape: Shape,
    *,
    extra_headers: dict[str, object] | None = None,
    subset_where: object | None = None,
    order_by: tuple[OrderBy, ...] = (),
    limit: int | None = None,
    offset: int | None = None,
) -> tuple[sql.Composed, list[object]]:
    """SELECT of one JSON text per row: key, value (selected columns) and headers.

    The subset arguments narrow and order it (subset snapshots); every value is bound.
    """
    table = shape.table
    prefix = relation_prefix(table.schema, table.name)
    # The key as a JSON string. Values of plain numeric or uuid key columns need no
    # escaping (no '/', nothing JSON escapes, never NULL in a primary key): writing them
    # straight in spares Postgres a replace() and to_json() per row.
    if table.primary_key and all(_plain_key_column(table, c) for c in table.primary_key):
        key_parts: list[sql.Composable] = [sql.SQL("%s")]
        params: list[object] = ['{"key":' + msgspec.json.encode(prefix).decode()[:-1]]
        for name in table.primary_key:
            key_parts += [sql.SQL(r"""'/\"' || {} || '\"'""").format(_column_text(table, name))]
        key = sql.SQL(" || ").join(key_parts) + sql.SQL(""" || '"'""")
    else:
        escaped: list[sql.Composable] = [sql.SQL("%s")]
        params = ['{"key":']
        prefix_parts: list[sql.Composable] = [sql.SQL("%s")]
        params_prefix: list[object] = [prefix]
        for name in table.identity:
            prefix_parts.append(
                sql.SQL("""coalesce('/"' || replace({}, '/', '//') || '"', '/_')""").format(
                    _column_text(table, name)
                )
            )
        escaped.append(sql.SQL("to_json({})::text").format(sql.SQL(" || ").join(prefix_parts)))
        params.extend(params_prefix)
        key = sql.SQL(" || ").join(escaped)
    names = sql.SQL(", ").join(sql.Literal(c) for c in shape.columns)
    values = sql.SQL(", ").join(_column_text(table, c) for c in shape.columns)
    headers = msgspec.json.encode(
        {"operation": "insert", "relation": [table.schema, table.name], **(extra_headers or {})}
    ).decode()
    parts: list[sql.Composable] = [
        sql.SQL(
            """SELECT {key} || ',"value":' """
            """|| json_object(ARRAY[{names}]::text[], ARRAY[{values}]::text[])::text """
            """|| %s FROM {table}"""
        ).format(
            key=key, names=names, values=values,
            table=sql.Identifier(table.schema, table.name),
        )
    ]
    params.append(',"headers":' + headers + "}")
    conditions = [w for w in (shape.where, subset_where) if w is not None]
    for i, where in enumerate(conditions):
        where_sql, where_params = where.to_sql()  # type: ignore[attr-defined]
        parts.append(sql.SQL(" WHERE (" if i == 0 else " AND (") + sql.SQL(where_sql) + sql.SQL(")"))
        params.extend(where_params)
    if order_by:
        terms = []
        for term in order_by:
            nulls = "" if term.nulls_first is None else (" NULLS FIRST" if term.nulls_first else " NULLS LAST")
            terms.append(sql.SQL("{}" + (" DESC" if term.descending else " ASC") + nulls).format(
                sql.Identifier(term.column)))
        parts.append(sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms))
    if limit is not None:
        parts.append(sql.SQL(" LIMIT %s"))
        params.append(limit)
    if offset is not None:
        parts.append(sql.SQL(" OFFSET %s"))
        params.append(offset)
    return sql.Composed(parts), params
