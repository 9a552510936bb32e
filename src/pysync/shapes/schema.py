"""The ``electric-schema`` response header: column types as Electric's ``Electric.Schema``."""

from __future__ import annotations

from collections.abc import Sequence

from pysync.postgres.catalog import Column, Table

# Postgres's VARHDRSZ: character typmods count the varlena header.
_VARHDRSZ = 4
_TIME_TYPES = frozenset({"date", "time", "timetz", "timestamp", "timestamptz"})
# INTERVAL_MASK bits from Postgres's datetime.h, in the order Electric reports them.
_INTERVAL_FIELDS = (
    ("YEAR", 1 << 2),
    ("MONTH", 1 << 1),
    ("DAY", 1 << 3),
    ("HOUR", 1 << 10),
    ("MINUTE", 1 << 11),
    ("SECOND", 1 << 12),
)
_INTERVAL_FULL_RANGE = 0x7FFF


def schema_header(table: Table, columns: Sequence[str]) -> dict[str, dict[str, object]]:
    """The header's JSON object for the selected ``columns`` of ``table``."""
    selected = set(columns)
    return {c.name: column_schema(c) for c in table.columns if c.name in selected}


def column_schema(column: Column) -> dict[str, object]:
    schema: dict[str, object] = {"type": column.type_name}
    if column.dims:
        schema["dims"] = column.dims
    if column.pk_index is not None:
        schema["pk_index"] = column.pk_index
    if column.not_null:
        schema["not_null"] = True
    schema.update(_type_modifier(column.type_name, column.type_mod))
    return schema


def _type_modifier(type_name: str, type_mod: int) -> dict[str, object]:
    # Clause order and the > 0 / >= 0 guards mirror Electric, quirks included: time(0)
    # falls through to a raw type_mod, and bit/varbit report even an absent typmod (-1).
    if type_name in ("varchar", "text") and type_mod > 0:
        return {"max_length": type_mod - _VARHDRSZ}
    if type_name == "bpchar" and type_mod > 0:
        return {"length": type_mod - _VARHDRSZ}
    if type_name in ("bit", "varbit"):
        return {"length": type_mod}
    if type_name == "interval" and type_mod >= 0:
        return _interval_modifier(type_mod)
    if type_name in _TIME_TYPES and type_mod > 0:
        return {"precision": type_mod}
    if type_name == "numeric" and type_mod >= 0:
        packed = type_mod - _VARHDRSZ
        # Postgres's NUMERIC_TYPMOD_SCALE: an 11-bit signed field, as numeric(p, s) allows
        # s < 0 since Postgres 15. (Electric reads 16 bits and reports 2046 for -2.)
        return {"precision": (packed >> 16) & 0xFFFF, "scale": ((packed & 0x7FF) ^ 0x400) - 0x400}
    if type_mod >= 0:
        return {"type_mod": type_mod}
    return {}


def _interval_modifier(type_mod: int) -> dict[str, object]:
    modifier: dict[str, object] = {}
    field_range = (type_mod >> 16) & _INTERVAL_FULL_RANGE
    if field_range != _INTERVAL_FULL_RANGE:
        units = [unit for unit, mask in _INTERVAL_FIELDS if field_range & mask]
        modifier["fields"] = units[0] if len(units) == 1 else f"{units[0]} TO {units[-1]}"
    precision = type_mod & 0xFFFF
    if precision != 0xFFFF:
        modifier["precision"] = precision
    return modifier
