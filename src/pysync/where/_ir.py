"""The validated, typed expression tree shared by the evaluator and the SQL renderer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .registry import Overload


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


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Node:
    """One node of the typed tree; its class says what it is (one per construct). Nodes
    are immutable and compared by identity (sub-trees may be shared, see
    ``_check._expanded_size``).

    ``type`` is the result type: ``int4``, ``text``, ``bool``, ``int4[]``, ``enum:<name>``,
    ``unknown`` (an untyped string literal not yet resolved). ``args`` are the operands in
    the order the SQL writes them: every walk over the tree (folding, limits, collations)
    reads them alone.
    """

    type: str
    args: tuple[Node, ...] = ()
    pos: int = 0


# ---------------------------------------------------------------- leaves


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Const(Node):
    """A constant, parsed as its type (None: NULL; an ``unknown`` one holds its text)."""

    value: Any = None


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Param(Const):
    """A constant given as ``$number``: its uses must agree on its type."""

    number: int


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Column(Node):
    name: str
    varchar: bool = False
    """Declared varchar (typed text): ``varchar = bpchar`` is bpchar's operator."""


# ---------------------------------------------------------------- operators


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Operator(Node):
    """A registry operator (infix or prefix), strict."""

    overload: Overload
    case: str | None = None
    """The case mapping of a ``collated`` overload (ILIKE)."""


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Comparison(Node):
    """``a <op> b`` for ``=``, ``<>``, ``<``, ``>``, ``<=``, ``>=`` on two values
    compared as ``compared_as``."""

    op: str
    compared_as: str
    date_mixed: bool = False
    """A date against a ``compared_as`` timestamp(tz), compared over the whole date range
    (Postgres' cross-type operators; a cast to timestamp would fail past 294276 AD)."""
    overload: Overload
    """The registry's operator."""


# ---------------------------------------------------------------- function calls


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Function(Node):
    """A call written ``name(args)``."""

    name: str


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Call(Function):
    """A registry function (its ``type`` is the overload's result, or for a polymorphic
    result the arguments' common type)."""

    overload: Overload
    varchar: bool = False
    """coalesce/greatest/least of the type of a varchar argument (see ``Column.varchar``)."""
    case: str | None = None
    """The case mapping of a ``collated`` overload (lower, upper)."""


# ---------------------------------------------------------------- casts


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Cast(Node):
    """The one argument converted to ``type``."""

    implicit: bool = False
    """Inserted by the checker (a conversion Postgres makes implicitly)."""
    output: bool = False
    """The argument's output text (concat()), rendered as the argument alone."""


# ---------------------------------------------------------------- boolean connectives


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class And(Node):
    pass


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Or(Node):
    pass


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Not(Node):
    pass


# ---------------------------------------------------------------- tests of a value


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class NullTest(Node):
    """``x IS NULL`` (``IS NOT NULL`` when negated)."""

    negated: bool = False


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class TruthTest(Node):
    """``x IS TRUE`` (``IS FALSE`` for ``truth`` False)."""

    truth: bool


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Distinct(Node):
    """``a IS DISTINCT FROM b`` (``IS NOT DISTINCT FROM`` when negated), compared as in
    ``Comparison``."""

    negated: bool
    compared_as: str
    overload: Overload
    """The registry's ``=`` for the operands (as ``Comparison.overload``)."""


# ---------------------------------------------------------------- IN, ANY, ALL, LIKE


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class InList(Node):
    """``x IN (c1, c2, ...)``: ``args`` are x and the items, all ``compared_as``."""

    compared_as: str
    overload: Overload
    """The registry's ``=`` for ``compared_as`` (as ``Comparison.overload``)."""


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Quantified(Node):
    """``x <op> ANY (array)`` or ``ALL`` (``every``)."""

    op: str
    compared_as: str
    every: bool = False
    overload: Overload
    """The registry's ``op`` for ``compared_as`` (as ``Comparison.overload``)."""


# ---------------------------------------------------------------- arrays


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class ArrayLiteral(Node):
    """``ARRAY[...]``."""

    untyped: bool = False
    """Every item an untyped literal (or none): its type is taken from the context."""


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Index(Node):
    """``array[i][j]...``: ``args`` are the array and the constant subscripts."""


# ---------------------------------------------------------------- sublinks


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Sublink(Node):
    """``cols IN (SELECT ...)``: the tested columns in ``args``; evaluated against a view of
    the dependency's values."""

    dependency: int
    key: str
    """The dependency's identity (names the subquery in the normalised clause)."""
    casts: tuple[str, ...]
    """The type each column's values are sent to Postgres as."""
    enums: tuple[bool, ...]
    """Which columns are enums (compared as their text)."""


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
