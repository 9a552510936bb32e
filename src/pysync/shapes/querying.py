"""The row-JSON SQL of snapshots and subsets: each row becomes one Electric change
message (key, value of the selected columns, headers) in SQL, as Electric's
``querying.ex`` does, so rows stream from Postgres straight into a shape log.

Subsets and move-ins build each message with ``json_object`` (``row_json_query``). An
initial snapshot reads every row of a table, so its SQL (``snapshot_rows``) does less per
row for the same bytes: values are concatenated (no arrays, no ``json_object``), a value
whose type's text never needs JSON escaping is quoted without ``to_json``, and the
message's constant start and end are left to the client (``RowSql.prefix``/``suffix``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from psycopg import sql

from pysync.postgres.catalog import Table
from pysync.shapes.changes import relation_prefix
from pysync.shapes.definition import Shape, Subquery
from pysync.shapes.subqueries.tags import NULL_SENTINEL, VALUE_PREFIX


def _plain_key_column(table: Table, name: str) -> bool:
    column = table.column(name)
    return (
        column is not None
        and column.dims == 0
        and (column.type_name in ("int2", "int4", "int8", "numeric", "uuid", "oid"))
    )


def _column_text(table: Table, name: str) -> sql.Composable:
    """The column in its type's output format, as pgoutput sends it.

    ``::text`` is the output function except for the types whose cast to text is their
    own (``Column.own_text_cast``: bool, bpchar, inet, domains over them, ...);
    ``format('%s')`` calls the output function for those. ``format('%s', NULL)`` is
    ``''``, so NULL is kept NULL first, by the datum itself (``IS NOT DISTINCT FROM
    NULL``): ``IS NULL`` is also true for a composite whose fields are all NULL.
    """
    column = table.column(name)
    ident = sql.Identifier(name)
    if column is not None and column.own_text_cast:
        return sql.SQL(
            "CASE WHEN {0} IS NOT DISTINCT FROM NULL THEN NULL ELSE format('%%s', {0}) END"
        ).format(ident)
    return sql.SQL("{}::text").format(ident)


class OrderBy(msgspec.Struct, frozen=True):
    column: str
    descending: bool = False
    nulls_first: bool | None = None


class Tagging:
    """How rows of a shape with ``IN (SELECT ...)`` get their ``tags`` and
    ``active_conditions`` in SQL: the shape's handle and the views to read sublinks with."""

    def __init__(self, handle: str, views: Sequence[Any]) -> None:
        self.handle = handle
        self.views = views


def _namespaced_sql(table: Table, name: str) -> sql.Composable:
    text = _column_text(table, name)
    return sql.SQL("CASE WHEN {0} IS NULL THEN {1} ELSE {2} || {0} END").format(
        text, sql.Literal(NULL_SENTINEL), sql.Literal(VALUE_PREFIX)
    )


def _tagging_sql(shape: Shape, tagging: Tagging) -> tuple[sql.Composable, list[object]]:
    """``'"active_conditions":' || ... || ',"tags":' || ...`` as Electric's querying.ex."""
    where: Any = shape.where
    plan = where.plan
    table = shape.table
    params: list[object] = []
    actives: list[sql.Composable] = []
    for position in plan.positions:
        leaf_sql, leaf_params = where.node_sql(position.node, tagging.views)
        params.extend(leaf_params)
        if position.negated:
            actives.append(sql.SQL("((") + sql.SQL(leaf_sql) + sql.SQL(") IS FALSE)"))
        else:
            actives.append(sql.SQL("COALESCE((") + sql.SQL(leaf_sql) + sql.SQL("), false)"))
    slots: list[sql.Composable] = []
    slot_params: list[list[object]] = []
    for position in plan.positions:
        if position.dependency is None:
            slots.append(sql.Literal("1"))
            slot_params.append([])
            continue
        columns = position.columns
        if len(columns) == 1:
            value = _namespaced_sql(table, columns[0])
            extra: list[object] = []
        else:
            value = sql.SQL(" || ").join(
                sql.SQL("%s || ") + _namespaced_sql(table, c) for c in columns
            )
            extra = [f"{c}:" for c in columns]
        slots.append(sql.SQL("md5(%s || ") + value + sql.SQL(")"))
        slot_params.append([tagging.handle, *extra])
    tags: list[sql.Composable] = []
    for disjunct in plan.disjuncts:
        inside = set(disjunct)
        parts = []
        for p, slot in enumerate(slots):
            if p in inside:
                parts.append(slot)
                params.extend(slot_params[p])
            else:
                parts.append(sql.Literal(""))
        tags.append(sql.SQL(" || '/' || ").join(parts))
    composed = sql.SQL(
        """'"active_conditions":' || to_json(ARRAY[{}]::boolean[])::text """
        """|| ',"tags":' || to_json(ARRAY[{}]::text[])::text || ','"""
    ).format(sql.SQL(", ").join(actives), sql.SQL(", ").join(tags))
    return composed, params


# Types whose output never holds a character JSON escapes (digits, signs, letters,
# '-', ':', '.', ' ', '+', 'e'; NaN, Infinity, BC) under any display setting: quoted as is.
# Built-in oids, so a user's type of the same name is not taken for them.
_PLAIN_TEXT_TYPES = frozenset(
    {
        20,  # int8
        21,  # int2
        23,  # int4
        26,  # oid
        700,  # float4
        701,  # float8
        1700,  # numeric
        2950,  # uuid
        1082,  # date
        1083,  # time
        1114,  # timestamp
        1184,  # timestamptz
        1186,  # interval
        1266,  # timetz
    }
)
_BOOL = 16


def escape_json(text: str) -> str:
    """A JSON string as Postgres' ``escape_json`` writes it (``json_object``'s keys):
    ``\\u%04x`` for control characters without a short escape, everything else as is."""
    out = ['"']
    for ch in text:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_SHORT_ESCAPES = {
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    '"': '\\"',
    "\\": "\\\\",
}


def _value_json(table: Table, name: str) -> sql.Composable:
    """The column's value as ``json_object`` writes it: its text form as a JSON string,
    ``null`` for NULL."""
    column = table.column(name)
    ident = sql.Identifier(name)
    if column is not None and column.dims == 0 and column.type_oid in _PLAIN_TEXT_TYPES:
        return sql.SQL(
            """CASE WHEN {0} IS NULL THEN 'null' ELSE '"' || {0}::text || '"' END"""
        ).format(ident)
    if column is not None and column.dims == 0 and column.type_oid == _BOOL:
        # bool's output function writes t / f (its cast to text says true / false).
        return sql.SQL(
            """CASE {} WHEN true THEN '"t"' WHEN false THEN '"f"' ELSE 'null' END"""
        ).format(ident)
    return sql.SQL("coalesce(to_json({})::text, 'null')").format(_column_text(table, name))


Part = str | tuple[sql.Composable, list[object]]
"""A piece of a row's message: constant text, or SQL of a never-NULL text and its params."""


class RowSql:
    """A row's message as ``prefix`` + ``middle`` + ``suffix``: the middle is SQL (with
    ``params``), the others are the same for every row and added by the client."""

    def __init__(self, parts: list[Part]) -> None:
        merged: list[Part] = []
        for part in parts:
            if isinstance(part, str) and merged and isinstance(merged[-1], str):
                merged[-1] += part
            elif part != "":
                merged.append(part)
        self.prefix = ""
        self.suffix = ""
        if merged and isinstance(first := merged[0], str):
            self.prefix = first
            del merged[0]
        if merged and isinstance(last := merged[-1], str):
            self.suffix = last
            del merged[-1]
        pieces: list[sql.Composable] = []
        self.params: list[object] = []
        for part in merged:
            if isinstance(part, str):
                pieces.append(sql.SQL("%s::text"))
                self.params.append(part)
            else:
                pieces.append(sql.SQL("(") + part[0] + sql.SQL(")"))
                self.params.extend(part[1])
        self.middle: sql.Composable = (
            sql.SQL(" || ").join(pieces) if pieces else sql.SQL("''::text")
        )


def snapshot_rows(shape: Shape, tagging: Tagging | None = None) -> RowSql:
    """The message of each row of a snapshot, byte for byte what ``row_json_query``'s
    ``json_object`` gives, in fewer operations per row."""
    table = shape.table
    prefix = relation_prefix(table.schema, table.name)
    parts: list[Part] = []
    if table.primary_key and all(_plain_key_column(table, c) for c in table.primary_key):
        parts.append('{"key":' + msgspec.json.encode(prefix).decode()[:-1])
        for name in table.primary_key:
            parts += ['/\\"', (_column_text(table, name), []), '\\"']
        parts.append('"')
    else:
        key, params = _escaped_key(table, prefix)
        parts += ['{"key":', (key, params)]
    parts.append(',"value":{')
    for n, name in enumerate(shape.columns):
        parts.append((", " if n else "") + escape_json(name) + " : ")
        parts.append((_value_json(table, name), []))
    parts.append("}")
    headers = msgspec.json.encode(
        {"operation": "insert", "relation": [table.schema, table.name]}
    ).decode()
    if tagging is None:
        parts.append(',"headers":' + headers + "}")
    else:
        tags_sql, tags_params = _tagging_sql(shape, tagging)
        parts += [',"headers":{', (tags_sql, tags_params), headers[1:] + "}"]
    return RowSql(parts)


def _escaped_key(table: Table, prefix: str) -> tuple[sql.Composable, list[object]]:
    """The key of a table without a plain primary key as a JSON string: the identity
    columns' texts, ``/`` doubled, ``_`` for NULL."""
    prefix_parts: list[sql.Composable] = [sql.SQL("%s")]
    for name in table.identity:
        prefix_parts.append(
            sql.SQL("""coalesce('/"' || replace({}, '/', '//') || '"', '/_')""").format(
                _column_text(table, name)
            )
        )
    return sql.SQL("to_json({})::text").format(sql.SQL(" || ").join(prefix_parts)), [prefix]


def snapshot_where(shape: Shape, tagging: Tagging | None) -> tuple[str, list[object]] | None:
    """The shape's WHERE as SQL for its snapshot (read with the tagging's views)."""
    if shape.where is None:
        return None
    where: Any = shape.where
    result: tuple[str, list[object]] = where.to_sql(tagging.views if tagging is not None else ())
    return result


def row_json_query(
    shape: Shape,
    *,
    extra_headers: dict[str, object] | None = None,
    subset_where: object | None = None,
    order_by: tuple[OrderBy, ...] = (),
    limit: int | None = None,
    offset: int | None = None,
    tagging: Tagging | None = None,
    where_sql: tuple[str, list[object]] | None = None,
) -> tuple[sql.Composed, list[object]]:
    """SELECT of one JSON text per row: key, value (selected columns) and headers.

    The subset arguments narrow and order it (subset snapshots); every value is bound.
    A shape with ``IN (SELECT ...)`` needs ``tagging`` (its rows carry tags); its clause is
    then read against the tagging's views, unless ``where_sql`` replaces it (a move-in).
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
        escaped, key_params = _escaped_key(table, prefix)
        params = ['{"key":', *key_params]
        key = sql.SQL("%s || ") + escaped
    names = sql.SQL(", ").join(sql.Literal(c) for c in shape.columns)
    values = sql.SQL(", ").join(_column_text(table, c) for c in shape.columns)
    headers = msgspec.json.encode(
        {"operation": "insert", "relation": [table.schema, table.name], **(extra_headers or {})}
    ).decode()
    if tagging is None:
        header_sql: sql.Composable = sql.SQL("%s")
        params.append(',"headers":' + headers + "}")
    else:
        tags_sql, tags_params = _tagging_sql(shape, tagging)
        header_sql = sql.SQL("%s || ") + tags_sql + sql.SQL(" || %s")
        params.extend([',"headers":{', *tags_params, headers[1:] + "}"])
    parts: list[sql.Composable] = [
        sql.SQL(
            """SELECT {key} || ',"value":' """
            """|| json_object(ARRAY[{names}]::text[], ARRAY[{values}]::text[])::text """
            """|| {headers} FROM {table}"""
        ).format(
            key=key,
            names=names,
            values=values,
            headers=header_sql,
            table=sql.Identifier(table.schema, table.name),
        )
    ]
    conditions: list[tuple[str, list[object]]] = []
    if where_sql is not None:
        conditions.append(where_sql)
    elif shape.where is not None:
        conditions.append(shape.where.to_sql(tagging.views if tagging is not None else ()))  # type: ignore[attr-defined]
    if subset_where is not None:
        conditions.append(subset_where.to_sql())  # type: ignore[attr-defined]
    for i, (condition, condition_params) in enumerate(conditions):
        parts.append(
            sql.SQL(" WHERE (" if i == 0 else " AND (") + sql.SQL(condition) + sql.SQL(")")
        )
        params.extend(condition_params)
    if order_by:
        terms = []
        for term in order_by:
            nulls = (
                ""
                if term.nulls_first is None
                else (" NULLS FIRST" if term.nulls_first else " NULLS LAST")
            )
            terms.append(
                sql.SQL("{}" + (" DESC" if term.descending else " ASC") + nulls).format(
                    sql.Identifier(term.column)
                )
            )
        parts.append(sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms))
    if limit is not None:
        parts.append(sql.SQL(" LIMIT %s"))
        params.append(limit)
    if offset is not None:
        parts.append(sql.SQL(" OFFSET %s"))
        params.append(offset)
    return sql.Composed(parts), params


def move_in_where(
    shape: Shape, after: Sequence[Any], before: Sequence[Any]
) -> tuple[str, list[object]]:
    """Rows a move-in brings: in the shape with the views after it, not before it."""
    where: Any = shape.where
    after_sql, after_params = where.to_sql(after)
    before_sql, before_params = where.to_sql(before)
    return f"({after_sql}) AND (({before_sql}) IS NOT TRUE)", after_params + before_params


def subquery_rows_query(
    subquery: Subquery, views: Sequence[Any], needed: Sequence[str]
) -> tuple[sql.Composed, list[object]]:
    """The rows of a dependency: identity columns' then needed columns' texts."""
    table = subquery.table
    columns = [_column_text(table, c) for c in (*table.identity, *needed)]
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(columns), sql.Identifier(table.schema, table.name)
    )
    params: list[object] = []
    where: Any = subquery.where
    if where is not None:
        where_sql, params = where.to_sql(views)
        query = query + sql.SQL(" WHERE ") + sql.SQL(where_sql)
    return sql.Composed([query]), params
