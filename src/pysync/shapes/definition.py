"""Shape definitions: what a client asks for, validated against the live catalog."""

from __future__ import annotations

import datetime
import enum
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import psycopg

from pysync.postgres.catalog import Table, load_table
from pysync.postgres.identifiers import IdentifierError, parse_relation
from pysync.postgres.pgoutput import Relation
from pysync.where import WhereError as WhereErrorType

REPLICA_MODES = ("default", "full")
LOG_MODES = ("full", "changes_only")


class ShapeError(ValueError):
    """A shape definition that cannot be served; ``field`` names the request parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ShapeDefinition(msgspec.Struct, frozen=True):
    """A shape as requested: table, optional WHERE with ``$n`` params, columns, modes.

    Names are exact (already case-folded) Postgres names; ``params[i]`` is ``$i+1``.
    """

    table: str
    schema: str = "public"
    where: str | None = None
    params: tuple[str, ...] = ()
    columns: tuple[str, ...] | None = None
    replica: str = "default"
    log_mode: str = "full"
    queryable_columns: tuple[str, ...] | None = None
    """Electric's server-side allow-list: the columns that may be synced and referenced
    by subset ``where``/``order_by``; the synced columns when ``columns`` is not given."""

    @classmethod
    def create(
        cls,
        table: str,
        *,
        namespace: str | None = None,
        where: str | None = None,
        params: Sequence[object] | Mapping[int | str, object] | None = None,
        columns: Sequence[str] | None = None,
        replica: str = "default",
        log_mode: str = "full",
        queryable_columns: Sequence[str] | None = None,
    ) -> ShapeDefinition:
        """Build a definition from user input: ``table`` may be ``todos``,
        ``public.todos``, ``"My Table"`` or ``app."Todos"`` (Postgres identifier rules)."""
        if namespace is None:
            try:
                namespace, table = parse_relation(table)
            except IdentifierError as exc:
                raise ShapeError("table", str(exc)) from None
        if replica not in REPLICA_MODES:
            raise ShapeError("replica", "is invalid")
        if log_mode not in LOG_MODES:
            raise ShapeError("log", "is invalid")
        if where is not None and not where.strip():
            where = None
        return cls(
            table=table,
            schema=namespace,
            where=where,
            params=normalize_params(params),
            columns=tuple(columns) if columns is not None else None,
            replica=replica,
            log_mode=log_mode,
            queryable_columns=tuple(queryable_columns) if queryable_columns is not None else None,
        )

    @property
    def relation(self) -> tuple[str, str]:
        return (self.schema, self.table)

    @property
    def selects_all(self) -> bool:
        """All the table's columns, whatever they are (Electric's ``selects_all_columns``):
        a column added to the table changes the shape."""
        return self.columns is None and self.queryable_columns is None


def normalize_params(
    params: Sequence[object] | Mapping[int | str, object] | None,
) -> tuple[str, ...]:
    """``$n`` values as strings in order: from a list, or a mapping ``{1: v, ...}``."""
    if params is None:
        return ()
    if isinstance(params, Mapping):
        numbered: dict[int, object] = {}
        for key, value in params.items():
            try:
                numbered[int(key)] = value
            except (TypeError, ValueError):
                raise ShapeError("params", "Parameters can only use numbers as keys") from None
        if sorted(numbered) != list(range(1, len(numbered) + 1)):
            raise ShapeError("params", "Parameters must be numbered sequentially, starting from 1")
        values = [numbered[i] for i in range(1, len(numbered) + 1)]
    elif isinstance(params, (str, bytes)):
        raise ShapeError("params", "is invalid")
    else:
        values = list(params)
    if any(v is None for v in values):
        raise ShapeError("params", "a parameter cannot be None: write IS NULL in the clause")
    return tuple(param_text(v) for v in values)


def param_text(value: Any) -> str:
    """A parameter in Postgres' input syntax for its type (dates in ISO format, arrays as
    ``{...}`` literals): a shape's ``$n`` params are text, read as the column reads it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.name)
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        seconds = value.seconds + value.microseconds / 1_000_000
        return f"{value.days} days {seconds:.6f} seconds"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return "{" + ",".join(_array_item(v) for v in value) + "}"
    return str(value)  # int, float, Decimal, UUID, str


def _array_item(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (list, tuple)):
        return param_text(value)
    text = param_text(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Subquery(msgspec.Struct, frozen=True):
    """The ``SELECT columns FROM table [WHERE ...]`` of an ``IN (SELECT ...)``: a
    dependency of a shape, whose current values are kept in memory."""

    table: Table
    columns: tuple[str, ...]
    """The selected columns, in the subquery's order: a row's value is their texts."""
    where: object | None
    """Its compiled clause (``pysync.where.Where``), which may have sublinks too."""
    dependencies: tuple[Subquery, ...]
    """The subqueries of ``where``, by dependency number."""
    key: str
    """Equal subqueries (of any shape) have equal keys and share one dependency."""

    @property
    def relation(self) -> tuple[str, str]:
        return (self.table.schema, self.table.name)


class Shape(msgspec.Struct, frozen=True):
    """A definition validated against the catalog, with its WHERE clause compiled."""

    definition: ShapeDefinition
    table: Table
    where: object | None
    """The compiled clause (``pysync.where.Where``) or None."""
    columns: tuple[str, ...]
    """Selected columns, in table order."""
    key: str
    """Equal definitions have equal keys, so they share one shape."""
    dependencies: tuple[Subquery, ...] = ()
    """The subqueries of ``where`` (``IN (SELECT ...)``), by dependency number."""

    @property
    def pk(self) -> tuple[str, ...]:
        return self.table.identity

    @property
    def subset_table(self) -> Table:
        """The table as subsets see it: only its queryable columns when the shape has
        an allow-list (a subset naming another column is refused, as an unknown one)."""
        allowed = self.definition.queryable_columns
        if allowed is None:
            return self.table
        return msgspec.structs.replace(
            self.table, columns=tuple(c for c in self.table.columns if c.name in allowed)
        )

    @property
    def reads(self) -> set[str]:
        """The columns the shape depends on: selected, key, and those its WHERE reads."""
        where = self.where
        return set(self.columns) | set(self.pk) | (where.columns if where is not None else set())  # type: ignore[attr-defined]


def affected_by(shape: Shape, relation: Relation) -> bool:
    """Does a Relation message change the shape's table in a way the shape depends on?
    Electric's rule: another table under the name, a select-all shape whose column count
    changed, or a column the shape reads dropped or retyped."""
    if relation.oid != shape.table.oid:
        return True
    return layout_affects(shape, relation)


def layout_affects(shape: Shape, relation: Relation) -> bool:
    """Do ``relation``'s columns differ from the shape's table's in a way the shape
    depends on (``affected_by``; a partition's, for a shape on its partitioned table)?"""
    layout = {c.name: c.type_oid for c in relation.columns}
    replicated = [c for c in shape.table.columns if not c.generated]
    if shape.definition.selects_all and len(layout) != len(replicated):
        return True
    return retyped(shape, layout)


def retyped(shape: Shape, types: dict[str, int]) -> bool:
    """Is a column the shape reads gone, or of another type, in ``types`` (name -> oid)?"""
    reads = shape.reads
    return any(types.get(c.name) != c.type_oid for c in shape.table.columns if c.name in reads)


Tables = Mapping[tuple[str, str], "Table | None"]
"""Tables read from the catalog by (schema, name); None for one that does not exist."""


def validate(conn: psycopg.Connection[tuple[object, ...]], definition: ShapeDefinition) -> Shape:
    """Check the definition against the live catalog; ShapeError names what is wrong."""
    tables = {rel: load_table(conn, *rel) for rel in subquery_relations(definition)}
    return build_shape(definition, load_table(conn, definition.schema, definition.table), tables)


def subquery_relations(definition: ShapeDefinition) -> list[tuple[str, str]]:
    """The tables the definition's ``IN (SELECT ...)`` read (nested ones too), to be read
    from the catalog before ``build_shape``; ShapeError for a clause Electric refuses."""
    from pysync.where import WhereError, has_sublink, sublinks

    found: list[tuple[str, str]] = []
    pending: list[tuple[str | None, int]] = (
        [(definition.where, 0)] if definition.where is not None else []
    )
    while pending:
        clause, offset = pending.pop()
        if clause is None or not has_sublink(clause):
            continue
        try:
            specs = sublinks(clause)
        except WhereError as exc:
            raise ShapeError("where", _shifted(exc, offset).message) from None
        for spec in specs:
            if (spec.schema, spec.table) not in found:
                found.append((spec.schema, spec.table))
            pending.append((spec.where, offset + spec.where_offset))
    return found


def _shifted(exc: WhereErrorType, offset: int) -> WhereErrorType:
    """A WhereError of a subquery's WHERE, located in the whole clause."""
    if exc.location is not None and offset:
        return type(exc)(exc.reason, exc.location + offset)
    return exc


def _missing_table(schema: str, name: str) -> ShapeError:
    return ShapeError(
        "table",
        f'Table "{schema}"."{name}" does not exist. If the table '
        "name contains capitals or special characters you must quote it.",
    )


def build_shape(
    definition: ShapeDefinition, table: Table | None, tables: Tables | None = None
) -> Shape:
    """The shape ``definition`` asks for on ``table`` (as just read from the catalog;
    None when there is no such table): columns checked, WHERE compiled. ``tables`` holds
    the tables of its subqueries (``subquery_relations``). Pure CPU work, safe to run in
    a thread."""
    if table is None:
        raise _missing_table(definition.schema, definition.table)
    _check_replicable(table)
    queryable = _queryable_columns(table, definition.queryable_columns)
    columns = _selected_columns(table, definition.columns, queryable)
    where = None
    dependencies: tuple[Subquery, ...] = ()
    if definition.where is not None:
        params = {i + 1: value for i, value in enumerate(definition.params)}
        where, dependencies = _compile(definition.where, table, params, tables or {}, 0)
    normalized_where = where.normalized if where is not None else ""  # type: ignore[attr-defined]
    fields: list[object] = [
        table.oid,
        table.schema,
        table.name,
        table.identity,
        normalized_where,
        sorted(columns),
        definition.replica,
        definition.log_mode,
    ]
    if queryable is not None:
        fields.append(["queryable", sorted(queryable)])  # absent before: old keys stay
    if dependencies:
        # Their tables' oids: a subquery's table created again makes another shape.
        fields.append([dependency.key for dependency in dependencies])
    identity = msgspec.json.encode(fields)
    key = hashlib.sha256(identity).hexdigest()
    return Shape(
        definition=definition,
        table=table,
        where=where,
        columns=columns,
        key=key,
        dependencies=dependencies,
    )


def _check_replicable(table: Table) -> None:
    """Refuse a table whose writes pysync's REPLICA IDENTITY FULL would break: Postgres 18
    refuses UPDATE and DELETE on a table whose full replica identity holds a column that
    is not published, and VIRTUAL generated columns never are. Nor an inheritance parent
    (``INHERITS``): its snapshot would hold its children's rows, and a child may add
    columns, have several parents, or be left out with ``ONLY``; Electric has no rule
    for them either (a partitioned table is served: ``shapes/partitions.py``)."""
    if table.has_children:
        raise ShapeError(
            "table",
            f'Table "{table.schema}"."{table.name}" has inheritance children (INHERITS): '
            "pysync syncs partitioned tables (PARTITION BY) but not inheritance parents, "
            "whose children may add columns or have other parents. Sync each child table "
            "instead, or make the table partitioned",
        )
    virtual = [c.name for c in table.columns if c.virtual]
    if virtual:
        raise ShapeError(
            "table",
            f'Table "{table.schema}"."{table.name}" has virtual generated columns ({", ".join(virtual)}): '
            "Postgres cannot replicate its updates and deletes with REPLICA IDENTITY FULL, which "
            "shapes need. Make them STORED generated columns to sync this table",
        )


def _compile(
    clause: str, table: Table, params: dict[int, str], tables: Tables, offset: int
) -> tuple[object, tuple[Subquery, ...]]:
    """A clause compiled with its subqueries (which share the shape's ``$n`` params)."""
    from pysync.where import SublinkType, WhereError, compile_where, has_sublink, sublinks

    try:
        specs = sublinks(clause) if has_sublink(clause) else ()
        dependencies: list[Subquery] = []
        types: list[SublinkType] = []
        by_key: dict[str, int] = {}
        for spec in specs:
            subquery = _subquery(spec, params, tables, offset)
            number = by_key.setdefault(subquery.key, len(dependencies))
            if number == len(dependencies):
                dependencies.append(subquery)
            columns = tuple(
                c for name in spec.columns for c in subquery.table.columns if c.name == name
            )
            types.append(SublinkType(number, subquery.key, columns))
        return compile_where(clause, table, params, types), tuple(dependencies)
    except WhereError as exc:
        raise ShapeError("where", _shifted(exc, offset).message) from None


def _subquery(spec: object, params: dict[int, str], tables: Tables, offset: int) -> Subquery:
    from pysync.where import SublinkSpec

    assert isinstance(spec, SublinkSpec)
    table = tables.get((spec.schema, spec.table))
    if table is None:
        raise _missing_table(spec.schema, spec.table)
    _check_replicable(table)
    unknown = [name for name in spec.columns if table.column(name) is None]
    if unknown:
        raise ShapeError(
            "columns", f"The following columns are not found on the table: {', '.join(unknown)}"
        )
    if not spec.columns:
        raise ShapeError("columns", "The list of columns must not be empty")
    where = None
    dependencies: tuple[Subquery, ...] = ()
    if spec.where is not None:
        where, dependencies = _compile(
            spec.where, table, params, tables, offset + spec.where_offset
        )
    normalized = where.normalized if where is not None else ""  # type: ignore[attr-defined]
    identity = msgspec.json.encode(
        [table.oid, table.schema, table.name, table.identity, list(spec.columns), normalized]
    )
    return Subquery(
        table=table,
        columns=spec.columns,
        where=where,
        dependencies=dependencies,
        key=hashlib.sha256(identity).hexdigest()[:16],
    )


def _queryable_columns(table: Table, allowed: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The allow-list checked in Electric's order: missing key columns, unknown, empty."""
    if allowed is None:
        return None
    missing = [name for name in table.identity if name not in allowed]
    if missing:
        raise ShapeError(
            "queryable_columns",
            "The list of queryable columns must include all primary key columns, missing: "
            + ", ".join(missing),
        )
    unknown = [name for name in allowed if table.column(name) is None]
    if unknown:
        raise ShapeError(
            "queryable_columns",
            f"The following queryable columns are not found on the table: {', '.join(unknown)}",
        )
    if not allowed:
        raise ShapeError("queryable_columns", "The list of queryable columns must not be empty")
    return allowed


def _selected_columns(
    table: Table, requested: tuple[str, ...] | None, queryable: tuple[str, ...] | None
) -> tuple[str, ...]:
    if requested is None:
        # Every column, or, as Electric, the allow-list when there is one.
        columns = [c for c in table.columns if queryable is None or c.name in queryable]
        generated = [c.name for c in columns if c.generated]
        if generated:
            raise ShapeError(
                "columns",
                "The following columns are generated and cannot be included in the shape: "
                f"{', '.join(generated)}. You can exclude them from the shape by explicitly "
                "listing which columns to fetch in the 'columns' query param",
            )
        return tuple(c.name for c in columns)
    # Electric's order of checks: missing key columns, unknown, generated, empty.
    wanted = set(requested)
    missing = [name for name in table.identity if name not in wanted]
    if missing:
        raise ShapeError(
            "columns",
            f"The list of columns must include all primary key columns, missing: {', '.join(missing)}",
        )
    # A column outside the allow-list is, for this shape, not on the table (Electric).
    unknown = [
        name
        for name in requested
        if table.column(name) is None or (queryable is not None and name not in queryable)
    ]
    if unknown:
        raise ShapeError(
            "columns", f"The following columns are not found on the table: {', '.join(unknown)}"
        )
    generated = [c.name for c in table.columns if c.generated and c.name in wanted]
    if generated:
        raise ShapeError(
            "columns",
            "The following columns are generated and cannot be included in the shape: "
            f"{', '.join(generated)}",
        )
    if not requested:
        raise ShapeError("columns", "The list of columns must not be empty")
    return tuple(c.name for c in table.columns if c.name in wanted)
