"""Typed tree -> a tree of Python closures evaluating a row of Postgres text values.

Each closure takes the row (a sequence of ``str | None`` in pgoutput column order) and
returns a Python value or None (SQL NULL). Column values are parsed where they are read;
constants were parsed once by the checker. Common shapes (column <op> constant) get fused
closures so that ``user_id = 5`` costs one call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from pysync.postgres.types.arrays import array_flatten, parse_array
from pysync.postgres.types.numbers import to_float4
from pysync.postgres.types.strings import parse_text

from ._ir import (
    And,
    ArrayLiteral,
    Call,
    Cast,
    Column,
    Comparison,
    Const,
    Distinct,
    Index,
    InList,
    Node,
    Not,
    NullTest,
    Operator,
    Or,
    Quantified,
    Sublink,
    TruthTest,
    WhereRuntimeError,
    elem,
    is_array,
)
from .runtime.arrays import (
    array_subscript,
)
from .runtime.casts import OUTPUT, array_cast, cast_function, input_function
from .runtime.enums import EnumType

Row = Sequence[str | None]
Fn = Callable[[Row], Any]


def _bool_out(v: str) -> bool:
    return v == "t"


def _float4_out(v: str) -> float:
    return to_float4(float(v))


# Postgres' own output is canonical, so the common types need no validation when they
# come from a row; anything unexpected still raises ValueError (-> WhereRuntimeError).
_FAST_COLUMN_PARSERS: dict[str, Callable[[str], Any]] = {
    "int2": int,
    "int4": int,
    "int8": int,
    "float8": float,
    "numeric": Decimal,
    "bool": _bool_out,
    "float4": _float4_out,
}


def column_parser(
    t: str, enums: Mapping[str, EnumType] | None = None
) -> Callable[[str], Any] | None:
    """Parser for a column value of type t, or None for text-like types (no parsing). An
    enum's label becomes its ``EnumValue`` (ordered by the type in ``enums``; one the
    catalog did not list raises ValueError when ordered)."""
    if t in ("text", "bpchar", "uuid"):
        return None
    if is_array(t):
        inner = column_parser(elem(t), enums)
        return parse_array(inner if inner is not None else parse_text)
    if t.startswith("enum:"):
        return (enums or {})[t].read
    return _FAST_COLUMN_PARSERS.get(t) or input_function(t)


class Compiler:
    def __init__(
        self,
        positions: Mapping[str, int],
        views: Sequence[Any] = (),
        enums: Mapping[str, EnumType] | None = None,
    ) -> None:
        self.positions = positions
        self.views = views
        """Per dependency, an object whose ``member(key)`` is ``key IN (values)``."""
        self.enums = enums
        """The clause's enum types, to read their columns' labels (see ``column_parser``)."""

    def compile(self, node: Node) -> Fn:
        match node:
            case Column():
                return self._col(node)
            case Const():
                value = node.value
                return lambda r: value
            case And():
                return self._and(node)
            case Or():
                return self._or(node)
            case Not():
                return self._not(node)
            case NullTest():
                return self._null_test(node)
            case TruthTest():
                f = self.compile(node.args[0])
                if node.truth:
                    return lambda r: f(r) is True
                return lambda r: f(r) is False
            case Distinct():
                return self._distinct(node)
            case Call() if not node.overload.strict:
                return _lazy([self.compile(a) for a in node.args], node.overload.impl)
            case Operator() | Call():
                return self._strict(node, node.overload.bind(node.case))
            case Comparison():
                return self._strict2(node, _comparison(node))
            case Sublink():
                return self._sublink(node)
            case InList():
                return self._in(node)
            case Quantified():
                return self._quantified(node)
            case Cast():
                return self._cast(node)
            case Index():
                return self._index(node)
            case ArrayLiteral():
                fs = [self.compile(a) for a in node.args]
                return lambda r: [f(r) for f in fs]
        raise AssertionError(node)

    # ------------------------------------------------------------ leaves

    def _col(self, node: Column) -> Fn:
        i = self.positions[node.name]
        parse = column_parser(node.type, self.enums)
        if parse is None:
            return lambda r: r[i]

        def col(r: Row) -> Any:
            v = r[i]
            if v is None:
                return None
            try:
                return parse(v)
            except (ValueError, ArithmeticError) as e:
                raise WhereRuntimeError(f"cannot parse {v!r} as {node.type}: {e}") from None

        return col

    # ------------------------------------------------------------ logic

    def _and(self, node: And) -> Fn:
        fs = [self.compile(a) for a in node.args]
        if len(fs) == 2:
            f1, f2 = fs

            def and2(r: Row) -> bool | None:
                a = f1(r)
                if a is False:
                    return False
                b = f2(r)
                if b is False:
                    return False
                return None if a is None or b is None else True

            return and2

        def and_n(r: Row) -> bool | None:
            result: bool | None = True
            for f in fs:
                v = f(r)
                if v is False:
                    return False
                if v is None:
                    result = None
            return result

        return and_n

    def _or(self, node: Or) -> Fn:
        fs = [self.compile(a) for a in node.args]

        def or_n(r: Row) -> bool | None:
            result: bool | None = False
            for f in fs:
                v = f(r)
                if v is True:
                    return True
                if v is None:
                    result = None
            return result

        return or_n

    def _not(self, node: Not) -> Fn:
        f = self.compile(node.args[0])

        def not_(r: Row) -> bool | None:
            v = f(r)
            return None if v is None else not v

        return not_

    def _null_test(self, node: NullTest) -> Fn:
        arg = node.args[0]
        if isinstance(arg, Column):
            i = self.positions[arg.name]
            if node.negated:
                return lambda r: r[i] is not None
            return lambda r: r[i] is None
        f = self.compile(arg)
        if node.negated:
            return lambda r: f(r) is not None
        return lambda r: f(r) is None

    def _distinct(self, node: Distinct) -> Fn:
        eq = _comparison(node)
        f1, f2 = (self.compile(a) for a in node.args)

        def notdistinct(r: Row) -> bool:
            a, b = f1(r), f2(r)
            if a is None or b is None:
                return a is None and b is None
            return bool(eq(a, b))

        if not node.negated:

            def distinct(r: Row) -> bool:
                return not notdistinct(r)

            return distinct
        return notdistinct

    # ------------------------------------------------------------ operators

    def _strict(self, node: Operator | Call, impl: Callable[..., Any]) -> Fn:
        """A strict operation (a registry overload)."""
        first, *rest = node.args
        constant = node.overload.constant
        values = [a.value for a in rest if isinstance(a, Const)]
        if constant is not None and rest and len(values) == len(rest):
            if any(v is None for v in values):
                return lambda r: None
            # Raises for a constant Postgres refuses: it would fail on the first row too.
            return self._strict1(first, constant(impl, values))
        if not rest:
            return self._strict1(first, impl)
        if len(rest) == 1:
            return self._strict2(node, impl)
        fs = [self.compile(a) for a in node.args]

        def strict_n(r: Row) -> Any:
            values = [f(r) for f in fs]
            return None if any(v is None for v in values) else impl(*values)

        return strict_n

    def _strict1(self, arg: Node, impl: Callable[[Any], Any]) -> Fn:
        if isinstance(arg, Column) and column_parser(arg.type, self.enums) is None:
            i = self.positions[arg.name]

            def text_col(r: Row) -> Any:  # the hot shape (col LIKE const): one closure
                v = r[i]
                return None if v is None else impl(v)

            return text_col
        f = self.compile(arg)

        def strict1(r: Row) -> Any:
            v = f(r)
            return None if v is None else impl(v)

        return strict1

    def _strict2(self, node: Node, impl: Callable[[Any, Any], Any]) -> Fn:
        left, right = node.args
        if isinstance(right, Const):
            c = right.value
            if c is None:
                return lambda r: None
            if isinstance(left, Column):
                return self._col_const(left, c, impl)
            f = self.compile(left)

            def with_const(r: Row) -> Any:
                a = f(r)
                return None if a is None else impl(a, c)

            return with_const
        f1, f2 = self.compile(left), self.compile(right)

        def strict2(r: Row) -> Any:
            # Postgres evaluates every argument before looking for NULLs, so an error on
            # the right side is raised even when the left side is NULL
            a = f1(r)
            b = f2(r)
            if a is None or b is None:
                return None
            return impl(a, b)

        return strict2

    def _col_const(self, col: Column, c: Any, impl: Callable[[Any, Any], Any]) -> Fn:
        """The hot shape: column <op> constant, fused into one closure."""
        i = self.positions[col.name]
        parse = column_parser(col.type, self.enums)
        if parse is None:

            def text_col_const(r: Row) -> Any:
                v = r[i]
                return None if v is None else impl(v, c)

            return text_col_const

        def col_const(r: Row) -> Any:
            v = r[i]
            if v is None:
                return None
            try:
                a = parse(v)
            except (ValueError, ArithmeticError) as e:
                raise WhereRuntimeError(f"cannot parse {v!r} as {col.type}: {e}") from None
            return impl(a, c)

        return col_const

    # ------------------------------------------------------------ IN (SELECT ...)

    def _sublink(self, node: Sublink) -> Fn:
        """``cols IN (SELECT ...)`` against the view of the dependency: its key is the
        column's text (a tuple of texts for a row), as the dependency keys its values."""
        member = self.views[node.dependency].member
        idx = [self.positions[a.name] for a in node.args if isinstance(a, Column)]
        if len(idx) == 1:
            i = idx[0]
            return lambda r: member(r[i])
        return lambda r: member(tuple([r[i] for i in idx]))

    # ------------------------------------------------------------ IN, ANY, ALL

    def _in(self, node: InList) -> Fn:
        t = node.compared_as
        x, *items = node.args
        fx = self.compile(x)
        hashable = t in (
            "int2",
            "int4",
            "int8",
            "text",
            "uuid",
            "bool",
            "date",
            "timestamp",
            "timestamptz",
            "time",
        ) or t.startswith("enum:")
        consts = [i for i in items if isinstance(i, Const)]
        if hashable and len(consts) == len(items):
            values = frozenset(i.value for i in consts if i.value is not None)
            has_null = any(i.value is None for i in consts)

            def in_set(r: Row) -> bool | None:
                v = fx(r)
                if v is None:
                    return None
                if v in values:
                    return True
                return None if has_null else False

            return in_set
        eq = _comparison(node)
        fs = [self.compile(i) for i in items]

        def in_list(r: Row) -> bool | None:
            v = fx(r)
            ws = [f(r) for f in fs]  # all evaluated, like the array Postgres builds
            if v is None:
                return None
            saw_null = False
            for w in ws:
                if w is None:
                    saw_null = True
                elif eq(v, w):
                    return True
            return None if saw_null else False

        return in_list

    def _quantified(self, node: Quantified) -> Fn:
        any_ = not node.every
        op = _comparison(node)
        fx, farr = (self.compile(a) for a in node.args)

        def quantified(r: Row) -> bool | None:
            v = fx(r)
            arr = farr(r)
            if arr is None:
                return None
            items = array_flatten(arr)
            if not items:
                return not any_
            if v is None:
                return None
            saw_null = False
            for w in items:
                if w is None:
                    saw_null = True
                elif op(v, w):
                    if any_:
                        return True
                elif not any_:
                    return False
            if saw_null:
                return None
            return not any_

        return quantified

    # ------------------------------------------------------------ casts, functions

    def _cast(self, node: Cast) -> Fn:
        src, dst = node.args[0].type, node.type
        arg = node.args[0]
        if src.startswith("enum:") and not is_array(src) and isinstance(arg, Column):
            # An enum column as text (col::text, concat) is its label as the row has it:
            # no need for its order, so a label added since the clause was compiled is
            # no reason to fail (``column_parser``).
            i = self.positions[arg.name]
            return lambda r: r[i]
        if dst.startswith("enum:"):
            # text to an enum, or text[] to an enum[] (the checker allows no other source)
            if is_array(dst):
                return self._strict1(arg, array_cast((self.enums or {})[elem(dst)].cast))
            return self._strict1(arg, (self.enums or {})[dst].cast)
        if node.output:
            if src.startswith("enum:"):
                return self.compile(node.args[0])
            return self._strict1(node.args[0], OUTPUT[src])
        if is_array(src):
            fn = cast_function(elem(src), elem(dst))
            assert fn is not None
            return self._strict1(node.args[0], array_cast(fn))
        fn = cast_function(src, dst)
        assert fn is not None, (src, dst)
        return self._strict1(node.args[0], fn)

    def _index(self, node: Index) -> Fn:
        farr = self.compile(node.args[0])
        subs: list[Any] = [a.value if isinstance(a, Const) else None for a in node.args[1:]]
        if any(s is None for s in subs):
            return lambda r: None

        def index(r: Row) -> Any:
            arr = farr(r)
            return None if arr is None else array_subscript(arr, subs)

        return index


def _lazy(fs: list[Fn], impl: Callable[[Iterator[Any]], Any]) -> Fn:
    """A function that is not strict: ``impl`` reads the arguments' values as it needs
    them (coalesce stops at the first non-NULL)."""

    def lazy(r: Row) -> Any:
        return impl(f(r) for f in fs)

    return lazy


def _comparison(node: Comparison | Distinct | InList | Quantified) -> Callable[[Any, Any], bool]:
    """The node's comparison on two non-NULL values (the registry's operator)."""
    impl: Callable[[Any, Any], bool] = node.overload.impl
    return impl
