"""The validated, typed expression tree shared by the evaluator and the SQL renderer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class WhereError(ValueError):
    """A WHERE clause that is invalid or outside the supported language.

    ``message`` is formatted like Electric's: ``At location <n>: <reason>``.
    """

    def __init__(self, reason: str, location: int | None = None) -> None:
        self.reason = reason
        self.location = location
        self.message = reason if location is None else f"At location {location}: {reason}"
        super().__init__(self.message)


class WhereRuntimeError(Exception):
    """Evaluating a clause on a row failed where Postgres raises an error too (integer out of
    range, division by zero, invalid text for a cast, ...), or on a value pysync cannot parse.

    The evaluator raises it and never answers False or None for such a row: the clause was
    folded as Postgres' planner folds it (``_fold``), so the snapshot query would fail on
    the same row too. A caller cannot decide the row either way and must resync the shape
    (a fresh snapshot) rather than drop or keep it.
    """


@dataclass(eq=False)
class Node:
    """One node of the typed tree.

    kind: col, const, op (binary/unary operator in ``name``), and, or, not, isnull, notnull,
    istrue, isfalse, distinct, notdistinct, in, any, all, cast, func, index, array, like,
    sublink (``cols IN (SELECT ...)``: the tested columns in ``args``, the dependency's
    number in ``value``; evaluated against a view of the dependency's values).
    ``type`` is the result type: ``int4``, ``text``, ``bool``, ``int4[]``, ``enum:<name>``,
    ``unknown`` (an untyped string literal not yet resolved).
    """

    kind: str
    type: str
    args: tuple[Node, ...] = ()
    name: str = ""
    value: Any = None
    pos: int = 0
    param: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def is_array(t: str) -> bool:
    return t.endswith("[]")


def elem(t: str) -> str:
    return t[:-2]


INT_TYPES = ("int2", "int4", "int8")
NUMERIC_TYPES = ("int2", "int4", "int8", "numeric", "float4", "float8")
ORDERED_TYPES = frozenset(
    NUMERIC_TYPES
    + ("text", "bpchar", "uuid", "date", "time", "timestamp", "timestamptz", "interval")
)
TEXT_TYPES = ("text", "bpchar")

TYPE_DISPLAY = {
    "int2": "int2",
    "int4": "int4",
    "int8": "int8",
    "float4": "float4",
    "float8": "float8",
    "numeric": "numeric",
    "bool": "bool",
    "text": "text",
    "bpchar": "bpchar",
    "uuid": "uuid",
    "date": "date",
    "time": "time",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "interval": "interval",
    "unknown": "unknown",
}


def display(t: str) -> str:
    if t.startswith("enum:"):
        return t[5:]
    if is_array(t):
        return display(elem(t)) + "[]"
    return TYPE_DISPLAY.get(t, t)
