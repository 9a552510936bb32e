"""Tables, columns, primary keys and types, read from the live catalog."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from typing import Any

import msgspec
import psycopg


class Column(msgspec.Struct, frozen=True):
    name: str
    attnum: int
    type_oid: int
    """For arrays, the array type's oid (``_int4``); ``type_name`` names the element type."""
    type_name: str
    """``pg_type.typname`` of the column, or of the element type for arrays (as Electric)."""
    type_mod: int
    dims: int
    """0 for scalars, the declared number of dimensions (at least 1) for arrays. A domain
    over an array is a scalar of the domain's type, as in Electric."""
    not_null: bool
    type_kind: str
    """``pg_type.typtype`` of the (element) type: b base, e enum, d domain, c composite, r range."""
    type_category: str
    """``pg_type.typcategory`` of the (element) type: N numeric, S string, D datetime, ..."""
    pk_index: int | None = None
    generated: bool = False
    virtual: bool = False
    """A VIRTUAL generated column (Postgres 18): not stored, never replicated."""
    own_text_cast: bool = False
    """``col::text`` may differ from the type's output function (what pgoutput sends):
    the type casts to text by a function (bool gives ``true``, bpchar drops its padding,
    inet adds ``/32``), is xml (its output rewrites the declaration), or is a domain (it
    casts as its base type). Never for arrays: they cast by ``array_out``."""


class Table(msgspec.Struct, frozen=True):
    oid: int
    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    """Primary-key column names in key order; empty when the table has no primary key."""
    replica_identity: str
    """``pg_class.relreplident``: d default, f full, n nothing, i index."""
    has_children: bool = False
    """A partitioned table or an inheritance parent: its rows live in other tables, whose
    changes pgoutput reports under their own names."""

    def column(self, name: str) -> Column | None:
        for column in self.columns:
            if column.name == name:
                return column
        return None

    @property
    def identity(self) -> tuple[str, ...]:
        """The columns that identify a row: the primary key, else every column (as Electric)."""
        return self.primary_key or tuple(c.name for c in self.columns)


# One round trip: the table's row repeated with each of its columns (attname is NULL
# for a table without columns).
_TABLE_ROWS = r"""
SELECT c.oid, n.nspname, c.relname, c.relreplident,
       c.relkind = 'p' OR EXISTS (SELECT FROM pg_inherits h WHERE h.inhparent = c.oid),
       a.attname, a.attnum, a.atttypid, a.atttypmod, a.attnotnull,
       a.attgenerated <> '' AS generated, a.attgenerated = 'v' AS virtual,
       CASE WHEN e.oid IS NOT NULL THEN e.typname ELSE t.typname END,
       CASE WHEN e.oid IS NOT NULL THEN greatest(a.attndims, 1) ELSE 0 END,
       CASE WHEN e.oid IS NOT NULL THEN e.typtype ELSE t.typtype END,
       CASE WHEN e.oid IS NOT NULL THEN e.typcategory ELSE t.typcategory END,
       e.oid IS NULL AND (t.typtype = 'd' OR t.oid = 'xml'::regtype OR EXISTS (
           SELECT FROM pg_cast k WHERE k.castsource = t.oid AND k.casttarget = 'text'::regtype
             AND k.castmethod = 'f')),
       -- int2vector subscripts start at 0, so this is already the 0-based key position
       array_position(i.indkey::int2[], a.attnum) AS pk_index
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type t ON t.oid = a.atttypid
-- The element type of arrays; a domain over an array is not one (as Electric).
LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE c.relkind IN ('r', 'p')
  -- What the role may not read does not exist for its clients (no column names or types
  -- leak through error messages), and system schemas are never synced.
  AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%%' AND n.nspname NOT LIKE 'pg\_temp\_%%'
"""
_TABLE_QUERY = _TABLE_ROWS + "AND n.nspname = %s AND c.relname = %s ORDER BY a.attnum"
_TABLES_BY_OID_QUERY = _TABLE_ROWS + "AND c.oid = ANY(%s::oid[]) ORDER BY c.oid, a.attnum"

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")


def is_system_schema(schema: str) -> bool:
    return schema in SYSTEM_SCHEMAS or schema.startswith(("pg_toast", "pg_temp_"))


def load_table(conn: psycopg.Connection[Any], schema: str, name: str) -> Table | None:
    """The table ``schema.name`` (exact, already-normalised names), or None if there is
    none the role may read."""
    if is_system_schema(schema):
        return None
    return _table(conn.execute(_TABLE_QUERY, (schema, name)).fetchall())


async def load_table_async(
    conn: psycopg.AsyncConnection[Any], schema: str, name: str
) -> Table | None:
    """``load_table`` on an async connection."""
    if is_system_schema(schema):
        return None
    cursor = await conn.execute(_TABLE_QUERY, (schema, name))
    return _table(await cursor.fetchall())


async def load_tables_by_oid_async(
    conn: psycopg.AsyncConnection[Any], oids: Collection[int]
) -> dict[int, Table]:
    """The tables with these oids that still exist (as they are now: a renamed one under
    its new name), in one query whatever their number."""
    cursor = await conn.execute(_TABLES_BY_OID_QUERY, (list(oids),))
    rows = await cursor.fetchall()
    found: dict[int, Table] = {}
    for oid, table_rows in itertools.groupby(rows, key=lambda row: row[0]):
        table = _table(list(table_rows))
        assert table is not None
        found[int(oid)] = table
    return found


def _table(rows: Sequence[Sequence[Any]]) -> Table | None:
    if not rows:
        return None
    oid, nspname, relname, replident, has_children = rows[0][:5]
    columns = []
    for (
        attname,
        attnum,
        typid,
        typmod,
        notnull,
        generated,
        virtual,
        typname,
        dims,
        typtype,
        typcategory,
        own_text_cast,
        pk_index,
    ) in (row[5:] for row in rows):
        if attname is None:
            continue
        columns.append(
            Column(
                name=str(attname),
                attnum=int(attnum),
                type_oid=int(typid),
                type_name=str(typname),
                type_mod=int(typmod),
                dims=int(dims),
                not_null=bool(notnull),
                type_kind=str(typtype),
                type_category=str(typcategory),
                pk_index=None if pk_index is None else int(pk_index),
                generated=bool(generated),
                virtual=bool(virtual),
                own_text_cast=bool(own_text_cast),
            )
        )
    pk = tuple(
        c.name
        for c in sorted(columns, key=lambda c: c.pk_index if c.pk_index is not None else -1)
        if c.pk_index is not None
    )
    return Table(
        oid=int(oid),
        schema=str(nspname),
        name=str(relname),
        columns=tuple(columns),
        primary_key=pk,
        replica_identity=str(replident),
        has_children=bool(has_children),
    )
