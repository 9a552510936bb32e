"""A table as the writer needs it (read from the catalog), and mutation values turned
into each column's Postgres input text.

Every value reaches Postgres as a bound text parameter with an explicit cast to the
column's type (``%s::"pg_catalog"."int4"``), never spliced into SQL. Numbers, booleans
and uuids are checked here, so the error names the column; other types (dates, enums,
ranges, ...) are parsed by Postgres through the cast. The cast is to the type without
its modifier, so ``varchar(n)`` limits are enforced by the assignment, not truncated.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

import msgspec

from pysync.postgres.types.numbers import INT_RANGES

# The catalog read: one row per column (typcategory 'A' = an array type).
COLUMNS_QUERY = """
SELECT a.attname, tn.nspname, t.typname,
       coalesce(e.typname, t.typname), coalesce(e.typcategory, t.typcategory),
       CASE WHEN e.oid IS NULL THEN 0 ELSE greatest(a.attndims, 1) END,
       a.attgenerated <> '', array_position(i.indkey::int2[], a.attnum)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_namespace tn ON tn.oid = t.typnamespace
LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
ORDER BY a.attnum
"""


class WriteColumn(msgspec.Struct, frozen=True):
    name: str
    cast: tuple[str, str]
    """Schema and name of the column's type (``_int4`` for ``int4[]``), for the cast."""
    element: str
    """``typname`` of the (element) type."""
    category: str
    """``typcategory`` of the (element) type."""
    dims: int
    generated: bool
    pk_index: int | None


class WriteTable(msgspec.Struct, frozen=True):
    schema: str
    name: str
    columns: dict[str, WriteColumn]
    primary_key: tuple[str, ...]

    @property
    def relation(self) -> tuple[str, str]:
        return (self.schema, self.name)


def table_from_rows(schema: str, name: str, rows: Sequence[Sequence[Any]]) -> WriteTable | None:
    """The table of COLUMNS_QUERY's rows; None if it returned none (no such table)."""
    if not rows:
        return None
    columns = {
        str(attname): WriteColumn(
            str(attname),
            (str(nsp), str(typname)),
            str(element),
            str(category),
            int(dims),
            bool(generated),
            None if pk_index is None else int(pk_index),
        )
        for attname, nsp, typname, element, category, dims, generated, pk_index in rows
    }
    pk = tuple(
        sorted(
            (c for c in columns.values() if c.pk_index is not None), key=lambda c: c.pk_index or 0
        )
    )
    return WriteTable(schema, name, columns, tuple(c.name for c in pk))


def input_text(column: WriteColumn, value: Any) -> Any:
    """``value`` (JSON-decoded, or a Python value) as the column's input: text, None, or
    (for arrays) nested lists of them. ValueError says what does not fit."""
    if value is None:
        return None
    if column.dims:
        if isinstance(value, str):
            return value  # an array literal, parsed by Postgres
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected an array, got {_kind(value)}")
        return _array_text(column, value)
    return _scalar_text(column.element, column.category, value)


def _array_text(column: WriteColumn, items: Sequence[Any]) -> list[Any]:
    return [
        None
        if item is None
        else _array_text(column, item)
        if isinstance(item, (list, tuple)) and column.element not in _JSON
        else _scalar_text(column.element, column.category, item)
        for item in items
    ]


_JSON = ("json", "jsonb")
_BOOL_TEXT = {"t": "true", "true": "true", "f": "false", "false": "false"}
_json_encode = msgspec.json.Encoder(decimal_format="number")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean", str: "a string"}.get(
        type(value), type(value).__name__
    )


def _scalar_text(element: str, category: str, value: Any) -> str:
    if element in _JSON:
        try:
            return _json_encode.encode(value).decode()
        except (TypeError, msgspec.EncodeError) as exc:
            raise ValueError(f"not a JSON value: {exc}") from None
    if isinstance(value, (dict, list, tuple)):
        raise ValueError(f"expected a scalar, got {_kind(value)}")
    if element in INT_RANGES:
        return _int_text(element, value)
    if element in ("float4", "float8"):
        return _float_text(value)
    if element == "numeric":
        return _numeric_text(value)
    if element == "bool":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
            return _BOOL_TEXT[value.strip().lower()]
        raise ValueError(f"expected a boolean, got {_kind(value)}")
    if element == "uuid":
        if isinstance(value, UUID):
            return str(value)
        if isinstance(value, str):
            try:
                return str(UUID(value))
            except ValueError:
                raise ValueError(f"invalid uuid {value[:60]!r}") from None
        raise ValueError(f"expected a uuid string, got {_kind(value)}")
    if isinstance(value, str):
        return value
    if isinstance(value, bytes) and element == "bytea":
        return "\\x" + value.hex()
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
    if category == "N" and isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return str(value)  # oid, money, ...
    raise ValueError(f"expected a string, got {_kind(value)}")


def _int_text(element: str, value: Any) -> str:
    number: int
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, int):
        number = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, Decimal) and value == value.to_integral_value()
    ):
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"invalid integer {value[:60]!r}") from None
    else:
        raise ValueError(f"expected an integer, got {_kind(value)}")
    low, high = INT_RANGES[element]
    if not low <= number <= high:
        raise ValueError(f"{number} is out of range for {element}")
    return str(number)


def _float_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise ValueError(f"expected a number, got {_kind(value)}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"invalid number {str(value)[:60]!r}") from None
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return repr(number)


def _numeric_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise ValueError(f"expected a number, got {_kind(value)}")
    try:
        # repr: the shortest text of a float (0.1, not 0.1000000000000000055...)
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise ValueError(f"invalid number {str(value)[:60]!r}") from None
    return str(number)


def row_key(table: WriteTable, data: Mapping[str, Any]) -> dict[str, Any]:
    """The primary-key values of ``data`` (those of an update's or delete's row)."""
    if not table.primary_key:
        raise ValueError(f"table {table.schema}.{table.name} has no primary key to find rows by")
    missing = [name for name in table.primary_key if data.get(name) is None]
    if missing:
        raise ValueError(f"the row's primary key is missing: {', '.join(missing)}")
    return {name: data[name] for name in table.primary_key}
