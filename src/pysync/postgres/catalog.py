"""Tables, columns, primary keys and types, read from the live catalog."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from typing import Any

import msgspec
import psycopg
from psycopg import sql

DEFAULT_COLLATION = "libc:C.UTF-8:C.UTF-8"
"""The locale of clusters pysync creates (``cluster.py``)."""


def collation_of(row: dict[str, Any] | None) -> str:
    """``provider:collate:ctype`` of a ``pg_database`` or ``pg_collation`` row (as jsonb:
    the columns differ between Postgres versions)."""
    if not row:
        return ""
    provider = str(row.get("datlocprovider") or row.get("collprovider") or "c")
    name = {"c": "libc", "i": "icu", "b": "builtin", "d": "default"}.get(provider, provider)
    if name == "libc":
        collate = row.get("datcollate") or row.get("collcollate") or ""
        ctype = row.get("datctype") or row.get("collctype") or ""
    else:
        collate = ctype = str(
            row.get("datlocale")
            or row.get("daticulocale")
            or row.get("colllocale")
            or row.get("colliculocale")
            or ""
        )
    # a nondeterministic collation (ICU only) makes even = compare by its rules
    nondeterministic = row.get("collisdeterministic") is False
    return f"{name}:{collate}:{ctype}" + (":nondeterministic" if nondeterministic else "")


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
    base_type: str = ""
    """For a domain over a scalar type: the base type's ``typname`` (domains of domains
    resolved); WHERE clauses compare the column as that type, as Postgres does."""
    base_kind: str = ""
    """``pg_type.typtype`` of ``base_type`` (b base, e enum)."""
    collation: str = ""
    """The column's own collation as ``provider:collate:ctype`` (``libc:C:C``,
    ``icu:de-DE:de-DE``, with ``:nondeterministic`` appended for such ICU collations);
    empty for the database's default or a type without one."""
    enum_type: str = ""
    """For an enum (an array of one, a domain over one): the enum type's name as SQL
    (``"public"."mood"``, quoted where needed); empty for other types."""
    enum_labels: tuple[str, ...] = ()
    """That enum's labels in their order (``pg_enum.enumsortorder``): Postgres compares
    enum values by it, not by their text."""


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
    """An inheritance parent (``INHERITS``, not partitioning): its rows live in other
    tables too, whose changes pgoutput reports under their own names."""
    partitioned: bool = False
    """A partitioned table (relkind ``p``): it holds no rows, its partitions do."""
    partitions: tuple[tuple[int, int, bool], ...] = ()
    """Of a partitioned table, every table under it (nested levels too), in oid order:
    ``(oid, attached_xid, created_as_partition)``: the transaction that made it a
    partition (its ``pg_inherits`` row), and whether that transaction also created it
    (``CREATE TABLE ... PARTITION OF``: empty then, so every row it holds came through
    the WAL) rather than attaching an existing table (``ATTACH PARTITION``)."""
    collation: str = DEFAULT_COLLATION
    """The database's default collation and ctype, ``provider:collate:ctype`` (text
    ordering follows the collate, lower/upper/ILIKE the ctype)."""

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
       c.relkind = 'r' AND EXISTS (SELECT FROM pg_inherits h WHERE h.inhparent = c.oid),
       (SELECT to_jsonb(d) - 'datacl' FROM pg_database d WHERE d.datname = current_database()),
       CASE WHEN c.relkind = 'p' THEN (
         -- pg_inherits also links index partitions: tables only. A table created as a
         -- partition got its row type in the transaction that made it one.
         SELECT coalesce(jsonb_agg(jsonb_build_array(
                  k.oid, h.xmin::text::bigint, ty.xmin::text = h.xmin::text) ORDER BY k.oid),
                '[]')
         FROM pg_partition_tree(c.oid) tr
         JOIN pg_class k ON k.oid = tr.relid AND k.relkind IN ('r', 'p')
         JOIN pg_inherits h ON h.inhrelid = k.oid
         JOIN pg_type ty ON ty.oid = k.reltype
         WHERE tr.relid <> c.oid) END,
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
       array_position(i.indkey::int2[], a.attnum) AS pk_index,
       CASE WHEN a.attcollation NOT IN (0, 100)
            THEN (SELECT to_jsonb(co) FROM pg_collation co WHERE co.oid = a.attcollation)
       END,
       CASE WHEN b.oid IS NOT NULL THEN ARRAY[b.typname::text, b.typtype::text] END,
       -- An enum (element, or domain's base) type: its name and labels in their order
       -- (enumsortorder, which ADD VALUE ... BEFORE/AFTER changes), for < and the like.
       (SELECT jsonb_build_array(
                 format('%%I.%%I', en.nspname, et.typname),
                 (SELECT jsonb_agg(pe.enumlabel ORDER BY pe.enumsortorder)
                  FROM pg_enum pe WHERE pe.enumtypid = et.oid))
        FROM pg_type et JOIN pg_namespace en ON en.oid = et.typnamespace
        WHERE et.oid = coalesce(e.oid, b.oid, t.oid) AND et.typtype = 'e')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type t ON t.oid = a.atttypid
-- The element type of arrays; a domain over an array is not one (as Electric).
LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
-- The base type of a domain (domains of domains resolved), unless an array.
LEFT JOIN LATERAL (
  WITH RECURSIVE base(oid, depth) AS (
    SELECT t.typbasetype, 1
    UNION ALL
    SELECT bt.typbasetype, base.depth + 1 FROM base JOIN pg_type bt ON bt.oid = base.oid
    WHERE bt.typtype = 'd' AND base.depth < 100
  )
  SELECT bt.oid, bt.typname, bt.typtype
  FROM base JOIN pg_type bt ON bt.oid = base.oid
  WHERE bt.typtype <> 'd' AND bt.typcategory <> 'A'
) b ON t.typtype = 'd'
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


# A table the role sees in the catalog (USAGE on its schema) but may not read.
_UNREADABLE_QUERY = """
SELECT current_user FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
  AND has_schema_privilege(n.oid, 'USAGE') AND NOT has_table_privilege(c.oid, 'SELECT')
"""


async def why_unreadable_async(
    conn: psycopg.AsyncConnection[Any], schema: str, name: str
) -> str | None:
    """For the operator's log, when ``load_table_async`` found no ``schema.name``: what
    Postgres says if the table exists but the role may not read it, with the GRANT to
    run; None when it does not exist for the role at all."""
    if is_system_schema(schema):
        return None
    row = await (await conn.execute(_UNREADABLE_QUERY, (schema, name))).fetchone()
    if row is None:
        return None
    table = sql.Identifier(schema, name).as_string(conn)
    role = sql.Identifier(str(row[0])).as_string(conn)
    return (
        f"permission denied for table {table}: role {role} may not read it (its shapes "
        f"are refused as a table that does not exist); run GRANT SELECT ON {table} TO {role}"
    )


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
    oid, nspname, relname, replident, has_children, database, partitions = rows[0][:7]
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
        collation,
        base,
        enum,
    ) in (row[7:] for row in rows):
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
                collation=collation_of(collation),
                base_type=str(base[0]) if base else "",
                base_kind=str(base[1]) if base else "",
                enum_type=str(enum[0]) if enum else "",
                enum_labels=tuple(map(str, enum[1] or ())) if enum else (),
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
        partitioned=partitions is not None,
        partitions=tuple((int(o), int(x), bool(c)) for o, x, c in partitions or ()),
        collation=collation_of(database) or DEFAULT_COLLATION,
    )
