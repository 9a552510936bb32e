"""The language's strict operators and functions, each declared once, and Postgres'
rules for choosing one of them.

An ``Overload`` is one ``pg_operator`` / ``pg_proc`` row pysync serves: its name, its
argument and result types, how it is written in SQL, and its implementation on Python
values (never NULL: every entry is strict, NULL in gives NULL out without a call). The
checker resolves an operator or call with ``resolve`` (Postgres' operator and function
type resolution over these candidates and ``IMPLICIT_CASTS``), the evaluator calls
``impl``, the renderer writes ``render``. Adding an operator or function to the language
is one more entry here; tests/test_where_registry.py evaluates every entry against
Postgres.

Comparisons, the array operators and ``text || text`` are entries too, but the checker
chooses their operand type itself (``_check.Checker.compare``: a common type, the
collation's rules, varchar against bpchar) and then takes the entry for it with
``lookup``; comparisons of enums (one operator per enum type) stay the checker's own, as
do constructs that are not strict functions of their arguments (AND/OR, LIKE, IN/ANY,
COALESCE, concat, casts, array_cat).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._ir import INT_TYPES, NUMERIC_TYPES, ORDERED_TYPES, is_array
from .runtime.arrays import array_ndims, array_operator
from .runtime.casts import IMPLICIT_CASTS
from .runtime.compare import compare_op, date_timestamp_compare
from .runtime.datetimes import DATETIME_OPS, timezone_function
from .runtime.intervals import JUSTIFY
from .runtime.numeric import absolute, arith_op, bitnot, float_pow, float_sqrt, negate

Form = Literal["infix", "prefix", "call"]

ANYARRAY = "anyarray"
"""A polymorphic argument: any array type (not an untyped literal)."""


@dataclass(frozen=True, eq=False)
class Overload:
    name: str
    """The operator's symbol or the function's name, as Postgres spells it."""
    form: Form
    args: tuple[str, ...]
    result: str
    impl: Callable[..., Any]
    """The value for the arguments' values, none of them NULL; raises WhereRuntimeError
    where Postgres raises."""
    converts: tuple[str, ...] = ()
    """The types the arguments are converted to for ``impl`` and in the SQL, where not
    ``args`` (see _arithmetic)."""

    @property
    def operands(self) -> tuple[str, ...]:
        return self.converts or self.args

    def render(self, args: Sequence[str]) -> str:
        """SQL for this operation on the arguments' SQL."""
        if self.form == "infix":
            return f"({args[0]} {self.name} {args[1]})"
        if self.form == "prefix":
            return f"({self.name} {args[0]})"
        return f"{self.name}({', '.join(args)})"

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(self.args)}) -> {self.result}"


def _arithmetic() -> Iterable[Overload]:
    for t in NUMERIC_TYPES:
        for op in "+-*/":
            yield Overload(op, "infix", (t, t), t, arith_op(op, t))
    # float48pl and the like: a float4 meets a float8 (or what converts to one) as float8.
    # Widening the float4 is exact, and pysync has always written it out: the clause's
    # normalised text (part of a shape's identity) stays the same.
    both = ("float8", "float8")
    for op in "+-*/":
        f8 = arith_op(op, "float8")
        yield Overload(op, "infix", ("float4", "float8"), "float8", f8, both)
        yield Overload(op, "infix", ("float8", "float4"), "float8", f8, both)
    for t in INT_TYPES:
        for op in "&|#":
            yield Overload(op, "infix", (t, t), t, arith_op(op, t))
    yield Overload("^", "infix", ("float8", "float8"), "float8", float_pow)


COMPARISONS = ("=", "<>", "<", ">", "<=", ">=")


def _comparisons() -> Iterable[Overload]:
    """The btree operators of each type the checker compares (bool: = and <> only), and
    Postgres' date-timestamp ones (date_lt_timestamp, timestamptz_gt_date, ...)."""
    for t in sorted(ORDERED_TYPES):
        for op in COMPARISONS:
            yield Overload(op, "infix", (t, t), "bool", compare_op(op, t))
    for op in ("=", "<>"):
        yield Overload(op, "infix", ("bool", "bool"), "bool", compare_op(op, "bool"))
    for t in ("timestamp", "timestamptz"):
        for op in COMPARISONS:
            yield Overload(op, "infix", ("date", t), "bool", date_timestamp_compare(op, t, True))
            yield Overload(op, "infix", (t, "date"), "bool", date_timestamp_compare(op, t, False))


def _array_operators() -> Iterable[Overload]:
    """= and <> (array_eq), @>, <@ and && of the arrays of every element type the
    language has (enum arrays have none)."""
    for t in sorted(ORDERED_TYPES | {"bool"}):
        a = t + "[]"
        for op in ("=", "<>"):
            yield Overload(op, "infix", (a, a), "bool", compare_op(op, a))
        for op in ("@>", "<@", "&&"):
            yield Overload(op, "infix", (a, a), "bool", array_operator(op, t))


def _text_concat(a: str, b: str) -> str:
    return a + b


OVERLOADS: tuple[Overload, ...] = (
    *_arithmetic(),
    *_comparisons(),
    *_array_operators(),
    Overload("||", "infix", ("text", "text"), "text", _text_concat),
    *(
        Overload(op, "infix", (left, right), result, impl)
        for (op, left, right), (result, impl) in DATETIME_OPS.items()
    ),
    *(Overload("-", "prefix", (t,), t, negate(t)) for t in (*NUMERIC_TYPES, "interval")),
    *(Overload("@", "prefix", (t,), t, absolute(t)) for t in NUMERIC_TYPES),
    *(Overload("~", "prefix", (t,), t, bitnot) for t in INT_TYPES),
    Overload("|/", "prefix", ("float8",), "float8", float_sqrt),
    *(Overload(name, "call", ("interval",), "interval", f) for name, f in JUSTIFY.items()),
    Overload("timezone", "call", ("text", "timestamp"), "timestamptz", timezone_function(True)),
    Overload("timezone", "call", ("text", "timestamptz"), "timestamp", timezone_function(False)),
    Overload("array_ndims", "call", (ANYARRAY,), "int4", array_ndims),
)

_BY_NAME: dict[tuple[str, Form, int], list[Overload]] = {}
for _o in OVERLOADS:
    _BY_NAME.setdefault((_o.name, _o.form, len(_o.args)), []).append(_o)


def declared(name: str, form: Form, arity: int) -> bool:
    return (name, form, arity) in _BY_NAME


def lookup(name: str, form: Form, types: Sequence[str]) -> Overload | None:
    """The overload declared for exactly ``types`` (no conversion), if any."""
    for o in _BY_NAME.get((name, form, len(types)), ()):
        if o.args == tuple(types):
            return o
    return None


# Postgres' type categories (pg_type.typcategory) and their preferred types.
_CATEGORY = {
    **dict.fromkeys(NUMERIC_TYPES, "N"),
    **dict.fromkeys(("text", "bpchar"), "S"),
    **dict.fromkeys(("date", "time", "timestamp", "timestamptz"), "D"),
    "interval": "T",
    "bool": "B",
    "uuid": "U",
}
_PREFERRED = frozenset({"float8", "text", "timestamptz", "interval", "bool"})


def _category(t: str) -> str:
    return "A" if is_array(t) or t == ANYARRAY else _CATEGORY.get(t, "X")


def _accepts(param: str, arg: str) -> bool:
    """An argument of type ``arg`` may be passed (implicitly converted) as ``param``."""
    if arg == "unknown":
        return param != ANYARRAY  # Postgres cannot infer a polymorphic type from it
    if param == ANYARRAY:
        return is_array(arg) and arg != "unknown[]"
    return arg == param or (arg, param) in IMPLICIT_CASTS


def _same(param: str, arg: str) -> bool:
    return param == arg or (param == ANYARRAY and is_array(arg))


class Ambiguous(Exception):
    """More than one overload fits equally well (Postgres: ``... is not unique``)."""


def resolve(name: str, form: Form, types: Sequence[str]) -> Overload | None:
    """The overload Postgres would choose for arguments of ``types`` (``unknown`` for an
    untyped literal), by its rules (func_select_candidate): an exact match (a binary
    operator's unknown argument taken as the other's type), else among the overloads the
    arguments convert to implicitly: most exact matches, then most preferred types where
    a conversion is needed, then by the categories of unknown arguments. None when no
    overload fits; raises Ambiguous when several do."""
    candidates = _BY_NAME.get((name, form, len(types)), [])
    exact = list(types)
    if form == "infix" and exact.count("unknown") == 1:
        known = exact[1] if exact[0] == "unknown" else exact[0]
        exact = [known, known]
    for o in candidates:
        if all(_same(p, t) for p, t in zip(o.args, exact, strict=True)):
            return o
    fits = [o for o in candidates if all(map(_accepts, o.args, types))]
    fits = _best(fits, lambda o: sum(_same(p, t) for p, t in zip(o.args, types, strict=True)))
    fits = _best(
        fits,
        lambda o: sum(
            _same(p, t) or (p in _PREFERRED and _category(p) == _category(t))
            for p, t in zip(o.args, types, strict=True)
            if t != "unknown"
        ),
    )
    if len(fits) > 1 and "unknown" in types:
        fits = _by_unknown_categories(fits, types)
    if len(fits) > 1:
        raise Ambiguous
    return fits[0] if fits else None


def _best(fits: list[Overload], score: Callable[[Overload], int]) -> list[Overload]:
    if len(fits) < 2:
        return fits
    top = max(map(score, fits))
    return [o for o in fits if score(o) == top]


def _by_unknown_categories(fits: list[Overload], types: Sequence[str]) -> list[Overload]:
    for i, t in enumerate(types):
        if t != "unknown":
            continue
        categories = {_category(o.args[i]) for o in fits}
        if "S" in categories:
            category = "S"
        elif len(categories) == 1:
            category = categories.pop()
        else:
            raise Ambiguous
        fits = [o for o in fits if _category(o.args[i]) == category]
        preferred = [o for o in fits if o.args[i] in _PREFERRED]
        fits = preferred or fits
    if len(fits) > 1:
        # all known arguments of one type: take the unknown ones as that type too
        known = {t for t in types if t != "unknown"}
        if len(known) == 1:
            (k,) = known
            same = [
                o
                for o in fits
                if all(_accepts(p, k) for p, t in zip(o.args, types, strict=True) if t == "unknown")
            ]
            if len(same) == 1:
                return same
    return fits
