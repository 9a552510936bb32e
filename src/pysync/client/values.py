"""Column values of change messages -> Python values, by the ``electric-schema`` header.

The wire carries every value as Postgres text output (Electric's session settings: ISO
dates in UTC, ``iso_8601`` intervals, hex bytea). Each column gets one parser, chosen
once per schema, so a row costs one dict walk. The Python types are those psycopg
returns for the same column, so rows compare equal to ``SELECT`` results:

* int2/int4/int8/oid: ``int``; float4/float8: ``float``; numeric: ``Decimal``; bool: ``bool``
* date/time/timetz/timestamp/timestamptz: ``datetime`` types (timestamptz aware, UTC);
  interval: ``timedelta`` (a month is 30 days, a year 365, as psycopg counts)
* uuid: ``uuid.UUID``; json/jsonb: the decoded document; bytea: ``bytes``
* arrays of these: nested ``list``
* anything else (text, varchar, enums, ranges, ...) stays ``str``. So do values that Python's
  types cannot hold: ``infinity`` dates and timestamps, years beyond 9999 or BC, arrays
  with explicit bounds (``[0:1]={1,2}``), and json nested deeper than Python decodes
  (about 1,000 levels; Postgres takes more, psycopg raises ``RecursionError``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

import msgspec

from pysync.postgres.types.arrays import parse_array
from pysync.postgres.types.intervals import parse_interval

Parser = Callable[[str], Any]
Row = dict[str, Any]

_json = msgspec.json.Decoder()


def _bool(text: str) -> bool:
    return text == "t" or text == "true"


def _lenient(parse: Parser) -> Parser:
    """Dates and times out of Python's range (infinity, BC, year > 9999) stay text."""

    def parse_or_keep(text: str) -> Any:
        try:
            return parse(text)
        except ValueError:
            return text

    return parse_or_keep


def _interval(text: str) -> dt.timedelta | str:
    months, days, usec = parse_interval(text)
    years, months_left = divmod(abs(months), 12)
    month_days = years * 365 + months_left * 30
    try:
        return dt.timedelta(
            days=(month_days if months >= 0 else -month_days) + days, microseconds=usec
        )
    except OverflowError:
        return text


def _json_value(text: str) -> Any:
    try:
        return _json.decode(text)
    except RecursionError:
        return text


def _bytea(text: str) -> bytes:
    if not text.startswith("\\x"):
        raise ValueError(f"bytea in a format other than hex: {text[:20]!r}")
    return bytes.fromhex(text[2:])


SCALARS: dict[str, Parser] = {
    "int2": int,
    "int4": int,
    "int8": int,
    "oid": int,
    "float4": float,
    "float8": float,
    "numeric": Decimal,
    "bool": _bool,
    "date": _lenient(dt.date.fromisoformat),
    "time": _lenient(dt.time.fromisoformat),
    "timetz": _lenient(dt.time.fromisoformat),
    "timestamp": _lenient(dt.datetime.fromisoformat),
    "timestamptz": _lenient(dt.datetime.fromisoformat),
    "interval": _interval,
    "uuid": UUID,
    "json": _json_value,
    "jsonb": _json_value,
    "bytea": _bytea,
}
"""Parsers by ``pg_type.typname``; extend or override with ``Client(parsers=...)``."""


def _identity(text: str) -> str:
    return text


_texts = parse_array(_identity)


def _array(element: Parser | None) -> Parser:
    # Elements are parsed after the structure: a parsed element may itself be a list
    # (a jsonb array), which the literal's parser would take for a sub-array.
    def convert(items: list[Any]) -> list[Any]:
        return [
            convert(item) if isinstance(item, list) else None if item is None else element(item)  # type: ignore[misc]
            for item in items
        ]

    def parse(text: str) -> Any:
        if text.startswith("["):  # explicit lower bounds: a Python list cannot say them
            return text
        items = _texts(text)
        return items if element is None else convert(items)

    return parse


def column_parsers(
    schema: Mapping[str, Any], custom: Mapping[str, Parser] | None = None
) -> dict[str, Parser]:
    """The parser of each column of ``schema`` (the decoded ``electric-schema`` header)
    whose values are not plain text."""
    parsers: dict[str, Parser] = {}
    for column, info in schema.items():
        type_name = info.get("type") if isinstance(info, Mapping) else None
        if not isinstance(type_name, str):
            continue
        element = (custom or {}).get(type_name) or SCALARS.get(type_name)
        dims = info.get("dims") or 0
        if dims:
            parsers[column] = _array(element)
        elif element is not None:
            parsers[column] = element
    return parsers


def parse_row(row: Row, parsers: Mapping[str, Parser]) -> Row:
    """``row`` with its values parsed in place (SQL NULL stays None)."""
    for column, parse in parsers.items():
        text = row.get(column)
        if text is not None:
            try:
                row[column] = parse(text)
            except (ValueError, TypeError, InvalidOperation, msgspec.DecodeError) as exc:
                raise ValueError(f"column {column!r}: cannot parse {text[:80]!r}: {exc}") from None
            except RecursionError:  # a custom parser, or an array literal nested this deep
                raise ValueError(f"column {column!r}: {text[:80]!r} is nested too deeply") from None
    return row
