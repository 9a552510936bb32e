"""The language's operators and functions, each declared once, and Postgres' rules for
choosing one of them.

An ``Overload`` is one ``pg_operator`` / ``pg_proc`` row pysync serves: its name, its
argument and result types, how it is written in SQL, and its implementation on Python
values (never NULL for a strict entry, where NULL in gives NULL out without a call). The
checker resolves an operator or call with ``resolve`` (Postgres' operator and function
type resolution over these candidates and ``IMPLICIT_CASTS``), the evaluator calls
``impl``, the renderer writes ``render``. Adding an operator or function to the language
is one more entry here; tests/test_where_registry.py evaluates every entry against
Postgres.

Comparisons, the array operators and ``text || text`` are entries too, but the checker
chooses their operand type itself (``_check.Checker.compare``: a common type, the
collation's rules, varchar against bpchar) and then takes the entry for it with
``lookup``. So do coalesce (polymorphic: the arguments' common type, by Postgres'
UNION/CASE rules, ``_check.Checker.unify``), greatest/least (one entry per type with a
btree order, as its comparisons) and concat (any argument, each by its output function):
these are not strict (``strict=False``: a NULL argument is skipped, not the answer) and
variadic. array_cat, array_append and array_prepend (``||`` of arrays too) are
polymorphic (``anyarray``/``anyelement``: the checker decides the array type) and not
strict either.

Every type with a btree order has the six comparisons and greatest/least: the scalar
types, bool (false before true), enums and the arrays of each (array_cmp: element by
element, a NULL element above any value, then the shorter array, then fewer or smaller
dimensions). Enums are ``anyenum`` (enum_eq, enum_lt, ...) and arrays of them
``anyenum[]``: an enum value is an ``EnumValue`` (``runtime.enums``), its label ordered
by ``pg_enum.enumsortorder`` as the catalog listed it when the clause was compiled; a
label added since equals none the clause knows, and ordering it raises, so the shape
resyncs rather than guess (a renamed label ends the shape first: ``shapes/drift.py``). (A domain over an enum has none of them in Postgres: ``anyenum`` does not take
it; the checker refuses it with Postgres' message.)

lower/upper and LIKE/ILIKE are entries too, ``collated``: what they compute (case
mapping, case folding) depends on the collation of their arguments, which the checker
derives (``Checker.collation``, ``case_of``), not on the argument types a signature
declares; the node carries the case mapping and ``bind`` gives the implementation under
it. The constructs that are not functions (AND/OR, IN/ANY, casts) stay the checker's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._ir import INT_TYPES, NUMERIC_TYPES, ORDERED_TYPES, is_array
from .runtime.arrays import (
    array_append,
    array_cat,
    array_ndims,
    array_operator,
    array_prepend,
)
from .runtime.casts import IMPLICIT_CASTS
from .runtime.compare import compare_op, date_timestamp_compare, sort_key
from .runtime.datetimes import DATETIME_OPS, timezone_function
from .runtime.intervals import JUSTIFY
from .runtime.numeric import absolute, arith_op, bitnot, float_pow, float_sqrt, negate
from .runtime.text import CASE_MAPS, LikeOperator

Form = Literal["infix", "prefix", "call"]

ANYARRAY = "anyarray"
"""A polymorphic argument: any array type (not an untyped literal)."""
ANYELEMENT = "anyelement"
"""A polymorphic argument: the element type of the call's ``anyarray``."""
ANYENUM = "anyenum"
"""A polymorphic argument: any enum type (all of one type, as the checker compares)."""
ANYENUMARRAY = "anyenum[]"
"""A polymorphic argument: an array of any enum type (not Postgres' name: it has
``anyarray`` whose element type is an enum; the checker binds it as for ``anyenum``)."""
ANYCOMPATIBLE = "anycompatible"
"""A polymorphic argument: all of them converted to their common type, the result's."""
ANY = "any"
"""Postgres' ``"any"``: an argument of any type, taken as its output text (concat)."""


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
    strict: bool = True
    """False: ``impl`` gets one iterator over the arguments' values, NULLs included,
    each evaluated when the iterator reaches it (coalesce evaluates no further than the
    first non-NULL, as Postgres)."""
    variadic: bool = False
    """The last argument type repeats: any number of arguments, at least ``len(args)``."""
    collated: bool = False
    """What it computes depends on its arguments' collation, not only on their types
    (lower, upper, ILIKE map case by it): ``impl(case)`` is the implementation under the
    case mapping the checker derived (a ``runtime.text.CASE_MAPS`` key)."""
    sql: Callable[[Sequence[str]], str] | None = None
    """How it is written, where ``form`` does not say (LIKE and ILIKE, and their ESCAPE)."""
    constant: Callable[[Any, Sequence[Any]], Callable[[Any], Any]] | None = None
    """Given the implementation and the values of every argument but the first, all
    constant: the function of the first (a LIKE pattern is compiled once, not per row)."""

    @property
    def operands(self) -> tuple[str, ...]:
        return self.converts or self.args

    def bind(self, case: str | None) -> Callable[..., Any]:
        """The implementation (under ``case``, for a collated one)."""
        return self.impl(case) if self.collated else self.impl

    def render(self, args: Sequence[str]) -> str:
        """SQL for this operation on the arguments' SQL."""
        if self.sql is not None:
            return self.sql(args)
        if self.form == "infix":
            return f"({args[0]} {self.name} {args[1]})"
        if self.form == "prefix":
            return f"({self.name} {args[0]})"
        return f"{self.name}({', '.join(args)})"

    def __repr__(self) -> str:
        more = ", ..." if self.variadic else ""
        return f"{self.name}({', '.join(self.args)}{more}) -> {self.result}"


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
    """The btree operators of each type the checker compares, and Postgres'
    date-timestamp ones (date_lt_timestamp, timestamptz_gt_date, ...). bool orders false
    before true; enums (enum_lt, ...) by their labels' order (``runtime.enums``: an
    EnumValue compares by it, and is equal to another of its type when their labels are)."""
    for t in (*sorted(ORDERED_TYPES), "bool", ANYENUM):
        for op in COMPARISONS:
            yield Overload(op, "infix", (t, t), "bool", compare_op(op, t))
    for t in ("timestamp", "timestamptz"):
        for op in COMPARISONS:
            yield Overload(op, "infix", ("date", t), "bool", date_timestamp_compare(op, t, True))
            yield Overload(op, "infix", (t, "date"), "bool", date_timestamp_compare(op, t, False))


ELEMENT_TYPES = (*sorted(ORDERED_TYPES), "bool", ANYENUM)
"""The element types of the arrays the language has: each has a btree order."""


def _array_operators() -> Iterable[Overload]:
    """The comparisons (array_eq, array_lt, ...: element by element, see
    ``runtime.compare``), @>, <@ and && of the arrays of every element type the language
    has."""
    for t in ELEMENT_TYPES:
        a = t + "[]"
        for op in COMPARISONS:
            yield Overload(op, "infix", (a, a), "bool", compare_op(op, a))
        for op in ("@>", "<@", "&&"):
            yield Overload(op, "infix", (a, a), "bool", array_operator(op, t))


def _text_concat(a: str, b: str) -> str:
    return a + b


def _coalesce(values: Iterator[Any]) -> Any:
    for v in values:
        if v is not None:
            return v
    return None


def _concat(values: Iterator[str | None]) -> str:
    return "".join(v for v in values if v is not None)


def _extreme(t: str, greatest: bool) -> Callable[[Iterator[Any]], Any]:
    """greatest() or least() of values of ``t``, NULLs ignored (NULL if all are); the
    first of equal ones, as Postgres keeps the first."""
    key = sort_key(t)
    pick = max if greatest else min

    def extreme(values: Iterator[Any]) -> Any:
        present = [v for v in values if v is not None]
        if not present:
            return None
        return pick(present) if key is None else pick(present, key=key)

    return extreme


def _pair(f: Callable[[Any, Any], Any]) -> Callable[[Iterator[Any]], Any]:
    """A two-argument function that is not strict, as the evaluator calls one."""

    def pair(values: Iterator[Any]) -> Any:
        a, b = values
        return f(a, b)

    return pair


def _array_functions() -> Iterable[Overload]:
    """Not strict: a NULL array acts as an empty one, a NULL element is appended."""
    for name, args, f in (
        ("array_cat", (ANYARRAY, ANYARRAY), array_cat),
        ("array_append", (ANYARRAY, ANYELEMENT), array_append),
        ("array_prepend", (ANYELEMENT, ANYARRAY), array_prepend),
    ):
        yield Overload(name, "call", args, ANYARRAY, _pair(f), strict=False)


def _extremes() -> Iterable[Overload]:
    """greatest and least of each type with a btree order (its comparisons above):
    scalars, enums, bool and the arrays of each."""
    for t in (*ELEMENT_TYPES, *(e + "[]" for e in ELEMENT_TYPES)):
        for name in ("greatest", "least"):
            f = _extreme(t, name == "greatest")
            yield Overload(name, "call", (t,), t, f, strict=False, variadic=True)


def _like_sql(keyword: str) -> Callable[[Sequence[str]], str]:
    def sql(args: Sequence[str]) -> str:
        s, pattern, *escape = args
        return f"({s} {keyword} {pattern}{f' ESCAPE {escape[0]}' if escape else ''})"

    return sql


def _case_mapping(which: int) -> Callable[[str | None], Callable[[str], str]]:
    def mapping(case: str | None) -> Callable[[str], str]:
        assert case is not None  # the checker derives one for every lower/upper
        return CASE_MAPS[case][which]

    return mapping


def _text() -> Iterable[Overload]:
    """lower/upper (of text: bpchar converts, trailing blanks dropped) and LIKE/ILIKE
    (``~~``/``~~*``, with an optional third argument: the ESCAPE character) of text and
    of bpchar as it is (``bpcharlike``: blanks kept)."""
    yield Overload("lower", "call", ("text",), "text", _case_mapping(0), collated=True)
    yield Overload("upper", "call", ("text",), "text", _case_mapping(1), collated=True)
    for t in ("text", "bpchar"):
        # one LIKE for every clause: its patterns, compiled as they come, are the same
        # tests wherever they are met
        like: Any = LikeOperator(None)
        for op, keyword, impl, collated in (
            ("~~", "LIKE", like, False),
            ("~~*", "ILIKE", LikeOperator, True),
        ):
            yield Overload(
                op,
                "infix",
                (t, "text"),
                "bool",
                impl,
                collated=collated,
                sql=_like_sql(keyword),
                constant=lambda like, rest: like.matcher(*rest),
            )


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
    Overload(
        "coalesce", "call", (ANYCOMPATIBLE,), ANYCOMPATIBLE, _coalesce, strict=False, variadic=True
    ),
    *_extremes(),
    *_array_functions(),
    Overload("concat", "call", (ANY,), "text", _concat, ("text",), strict=False, variadic=True),
    *_text(),
)

_BY_NAME: dict[tuple[str, Form, int], list[Overload]] = {}
_VARIADIC: dict[tuple[str, Form], list[Overload]] = {}
for _o in OVERLOADS:
    if _o.variadic:
        _VARIADIC.setdefault((_o.name, _o.form), []).append(_o)
    else:
        _BY_NAME.setdefault((_o.name, _o.form, len(_o.args)), []).append(_o)


def declared(name: str, form: Form, arity: int) -> bool:
    return (name, form, arity) in _BY_NAME


def lookup(name: str, form: Form, types: Sequence[str]) -> Overload | None:
    """The overload declared for exactly ``types`` (no conversion), if any; a variadic
    one's repeated argument matches each further argument, a polymorphic one any type
    (the checker has converted the arguments to one type, or to text for ``"any"``)."""
    for o in _BY_NAME.get((name, form, len(types)), ()):
        if all(map(_matches, o.args, types)):
            return o
    for o in _VARIADIC.get((name, form), ()):
        n = len(o.args)
        params = o.args[:-1] + (o.args[-1],) * (len(types) - n + 1)
        if len(types) >= n and all(map(_matches, params, types)):
            return o
    return None


def _matches(param: str, t: str) -> bool:
    """An argument of type ``t`` is one for ``param`` as it is (polymorphic: as the
    checker converted it)."""
    if param == ANYARRAY:
        return is_array(t)
    if param == ANYENUM:
        return t.startswith("enum:") and not is_array(t)
    if param == ANYENUMARRAY:
        return is_array(t) and t.startswith("enum:")
    return param == t or param in (ANYELEMENT, ANYCOMPATIBLE, ANY)


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
