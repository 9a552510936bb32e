"""Shape WHERE clauses: validation (Electric's WHERE language), in-process evaluation on
replicated rows, SQL for the snapshot query, and equality routing keys.

    where = compile_where("user_id = $1 AND title ILIKE '%x%'", table, {1: "5"})
    matches = where.bind(column_names)      # once per relation layout
    matches(["5", "Fix x", None])           # True / False / None (SQL NULL)
    sql, params = where.to_sql()            # for "SELECT ... WHERE " + sql

Evaluation errors (integer overflow, division by zero, unparsable values) raise
``WhereRuntimeError``: Postgres would raise for the same row (constants are folded first,
as its planner does), so the row is neither a match nor a non-match: the caller
invalidates the shape, which resyncs. A constant part that raises is a ``WhereError``, as
it fails Postgres' planner.

A clause with ``col IN (SELECT ...)`` sublinks is compiled in two steps: ``sublinks(clause)``
names the subqueries (their tables, columns and WHERE text), the caller resolves them
(``SublinkType``: which dependency, its column types), then ``compile_where(...,
sublinks=...)``. Evaluating and rendering such a clause takes *views*: per dependency an
object with ``member(key) -> bool | None`` (``key IN values``, three-valued) and
``texts()`` (every value, to send to Postgres); a key is a column's text, or a tuple of
them for ``(a, b) IN (SELECT x, y ...)``. ``plan`` is the clause's DNF (see ``_dnf``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from pysync.postgres.catalog import Table

from ._check import FUNCTIONS, SublinkType, check_clause, parse
from ._compile import Compiler, column_parser
from ._dnf import Plan, Position, plan
from ._ir import (
    And,
    Cast,
    Column,
    Comparison,
    Const,
    InList,
    Node,
    Sublink,
    WhereError,
    WhereRuntimeError,
)
from ._limits import MAX_PARAMS, MAX_PARAMS_LENGTH, over_limit
from ._memo import SizedCache
from ._render import Renderer
from ._render import normalized as _normalized
from ._render import to_sql as _to_sql
from ._sublinks import SublinkSpec, has_sublink
from .runtime.casts import cast_function
from .runtime.enums import EnumType

__all__ = [
    "FUNCTIONS",
    "Plan",
    "Position",
    "RangeIndex",
    "SublinkSpec",
    "SublinkType",
    "Where",
    "WhereError",
    "WhereRuntimeError",
    "compile_where",
    "has_sublink",
    "has_subquery",
    "sublinks",
]

Evaluator = Callable[[Sequence[str | None]], bool | None]
KeyFunction = Callable[[str], object]


class Where:
    """A validated WHERE clause for one table (build with ``compile_where``)."""

    def __init__(
        self,
        clause: str,
        tree: Node,
        columns: frozenset[str],
        sublinks: int = 0,
        enums: Mapping[str, EnumType] | None = None,
    ) -> None:
        self.clause = clause
        self.tree = tree
        self.columns = columns
        self.enums: Mapping[str, EnumType] = enums or {}
        """The enum types the clause reads, with their labels' order as the catalog had it."""
        self.normalized = _normalized(tree, self.enums)
        self.sublinks = sublinks
        """How many dependencies (distinct subqueries) the clause reads."""
        self.plan: Plan | None = plan(tree) if sublinks else None
        self._bound: dict[tuple[str, ...], Evaluator] = {}
        self._bind_lock = threading.Lock()  # a cached Where is shared between threads

    def __repr__(self) -> str:
        return f"Where({self.normalized!r})"

    def bind(self, column_names: Sequence[str], views: Sequence[Any] = ()) -> Evaluator:
        """An evaluator for rows whose values come in the order of ``column_names``
        (a clause with sublinks needs the views it is evaluated against)."""
        key = tuple(column_names)
        positions = {name: i for i, name in enumerate(key)}
        missing = self.columns - positions.keys()
        if missing:
            raise ValueError(f"the row has no column(s) {', '.join(sorted(missing))}")
        if self.sublinks:
            return Compiler(positions, views, self.enums).compile(self.tree)
        with self._bind_lock:
            cached = self._bound.get(key)
            if cached is not None:
                return cached
            evaluator: Evaluator = Compiler(positions, enums=self.enums).compile(self.tree)
            self._bound[key] = evaluator
            return evaluator

    def bind_node(
        self, node: Node, column_names: Sequence[str], views: Sequence[Any] = ()
    ) -> Evaluator:
        """An evaluator of one sub-expression (a DNF position) of this clause."""
        positions = {name: i for i, name in enumerate(column_names)}
        return Compiler(positions, views, self.enums).compile(node)

    def to_sql(self, views: Sequence[Any] = ()) -> tuple[str, list[object]]:
        """SQL for the snapshot query's WHERE with psycopg ``%s`` placeholders (sublinks
        as ``= ANY`` of the views' values)."""
        return _to_sql(self.tree, views, self.enums)

    def node_sql(self, node: Node, views: Sequence[Any] = ()) -> tuple[str, list[object]]:
        """``to_sql`` of one sub-expression (a DNF position)."""
        r = Renderer(inline=False, views=views, enums=self.enums)
        return r.render(node), r.params

    def equality_index(self) -> tuple[str, frozenset[object], KeyFunction] | None:
        """(column, keys, key_fn): a row can only match if key_fn(its text value) in keys."""
        return _equality_index(self.tree)

    def range_index(self) -> RangeIndex | None:
        """A numeric column the clause bounds (``BETWEEN``, ``<``, ``>=`` ... in the top-level
        AND): a row can only match if key_fn(its text value) is in the range."""
        return _range_index(self.tree)

    def routing_index(self) -> tuple[str, frozenset[object], KeyFunction] | RangeIndex | None:
        """How the router can find this shape: by equality if it can, else by range."""
        return self.equality_index() or self.range_index()

    def subquery_index(self) -> tuple[str, int] | None:
        """(column, dependency): a row can only match if its column's text is a value of
        that dependency (the clause is, or ANDs, ``column IN (SELECT ...)``)."""
        tree = self.tree
        for term in tree.args if isinstance(tree, And) else (tree,):
            if isinstance(term, Sublink) and len(term.args) == 1:
                (column,) = term.args
                assert isinstance(column, Column)
                return column.name, term.dependency
        return None


def compile_where(
    clause: str,
    table: Table,
    params: Mapping[int, str] | None = None,
    sublinks: Sequence[SublinkType] | None = None,
) -> Where:
    """Validate and type-check ``clause`` against ``table``; raises WhereError.

    ``sublinks`` resolves the clause's ``IN (SELECT ...)`` (see ``sublinks``) in order;
    None refuses any (as in subsets: "Subqueries are not allowed in subsets").

    A pure function of its arguments, safe to call from several threads at once; every
    input is bounded (``_limits``) before work is done on it.
    """
    frozen = _bounded_params(params or {})
    resolved = tuple(sublinks) if sublinks is not None else None
    key = (clause, table, frozen, resolved)
    where = _COMPILED.get(key)
    if where is None:
        tree, columns, enums = check_clause(clause, table, dict(frozen), resolved)
        where = Where(clause, tree, columns, len({s.dependency for s in resolved or ()}), enums)
        _COMPILED.put(key, where, len(clause) + sum(len(v) for _, v in frozen))
    return where


def has_subquery(clause: str) -> bool:
    """Does ``clause`` (which Postgres must accept: WhereError otherwise) hold a subquery
    of any form (``IN (SELECT``, ``EXISTS``, a scalar subquery ...)?"""
    from pglast import parser as pg

    from ._syntax import PREFIX, check_syntax

    text = check_syntax(clause)
    if "select" not in text.lower():
        return False
    return any(t.name == "SELECT" for t in pg.scan(PREFIX + text)[1:])


def sublinks(clause: str) -> tuple[SublinkSpec, ...]:
    """The ``IN (SELECT ...)`` sublinks of ``clause`` in textual order (none for most);
    raises WhereError for a clause Postgres refuses or a sublink Electric refuses."""
    return parse(clause).sublinks


def _bounded_params(params: Mapping[int, str]) -> tuple[tuple[int, str], ...]:
    if len(params) > MAX_PARAMS:
        raise WhereError(over_limit("number of parameters", MAX_PARAMS))
    values = [(int(k), str(v)) for k, v in params.items()]
    if sum(len(v) for _, v in values) > MAX_PARAMS_LENGTH:
        raise WhereError(over_limit("total length of parameter values", MAX_PARAMS_LENGTH))
    return tuple(sorted(values))


# Compiled clauses by (clause, table, params, sublinks), bounded by their text as the parse cache.
_COMPILED: SizedCache[tuple[object, ...], Where] = SizedCache(
    max_entries=1024, max_total_cost=512 * 1024, max_entry_cost=8 * 1024
)


# ---------------------------------------------------------------- equality routing

_NAN_KEY = ("NaN",)


def _canonical(value: Any) -> object:
    """Hashable key under which values equal in Postgres collide (NaN equals NaN there)."""
    if isinstance(value, float) and math.isnan(value):
        return _NAN_KEY
    if isinstance(value, Decimal) and value.is_nan():
        return _NAN_KEY
    if isinstance(value, tuple):  # interval: compared by its span
        from pysync.postgres.types.intervals import interval_key

        return ("interval", interval_key(value))
    if isinstance(value, str):
        return value
    return value


class RangeIndex(NamedTuple):
    column: str
    low: Any
    """None: unbounded."""
    low_inclusive: bool
    high: Any
    high_inclusive: bool
    key_fn: KeyFunction

    def contains(self, value: Any) -> bool:
        low, high = self.low, self.high
        if low is not None and not (value > low or (self.low_inclusive and value == low)):
            return False
        return high is None or value < high or (self.high_inclusive and value == high)


# Ordered as in Python: a NaN (greatest in Postgres) is never a bound; a NaN row value is
# looked up as "anything" by the router.
_RANGE_TYPES = frozenset({"int2", "int4", "int8", "numeric", "float4", "float8"})
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _conjuncts(tree: Node) -> list[Node]:
    """The terms of a top-level AND, nested ANDs (a BETWEEN) included."""
    terms: list[Node] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, And):
            todo.extend(reversed(node.args))
        else:
            terms.append(node)
    return terms


def _range_index(tree: Node) -> RangeIndex | None:
    # (column, compared as) -> [low, low_inclusive, high, high_inclusive, key_fn]: terms
    # combine only when they compare as one type (the key function casts as Postgres does).
    bounds: dict[tuple[str, str], list[Any]] = {}
    for term in _conjuncts(tree):
        if (
            not isinstance(term, Comparison)
            or term.op not in _FLIPPED
            or term.compared_as not in _RANGE_TYPES
        ):
            continue
        left, right = term.args
        op = term.op
        if isinstance(left, Const):
            left, right, op = right, left, _FLIPPED[op]
        if not isinstance(right, Const) or right.value is None:
            continue
        found = _column_under_casts(left)
        if found is None:
            continue
        col, casts = found
        t = term.compared_as
        bound = _key_of(t, right.value)
        if not isinstance(bound, (int, float, Decimal)) or bound != bound:  # NaN
            continue
        entry = bounds.setdefault((col.name, t), [None, False, None, False, None])
        if entry[4] is None:
            entry[4] = _key_function(col.type, [c.type for c in reversed(casts)], t)
        if op in (">", ">="):
            inclusive = op == ">="
            if entry[0] is None or bound > entry[0] or (bound == entry[0] and not inclusive):
                entry[0], entry[1] = bound, inclusive
        else:
            inclusive = op == "<="
            if entry[2] is None or bound < entry[2] or (bound == entry[2] and not inclusive):
                entry[2], entry[3] = bound, inclusive
    if not bounds:
        return None
    # Prefer a column bounded on both sides: it prunes most.
    (name, _), (low, low_inc, high, high_inc, key_fn) = max(
        bounds.items(), key=lambda item: (item[1][0] is not None) + (item[1][2] is not None)
    )
    return RangeIndex(name, low, low_inc, high, high_inc, key_fn)


def _equality_index(tree: Node) -> tuple[str, frozenset[object], KeyFunction] | None:
    candidates = tree.args if isinstance(tree, And) else (tree,)
    for term in candidates:
        found = _equality_term(term)
        if found is not None:
            return found
    return None


def _column_under_casts(node: Node) -> tuple[Column, list[Node]] | None:
    """The column under a chain of implicit numeric/datetime casts (e.g. int4 -> numeric)."""
    casts: list[Node] = []
    while isinstance(node, Cast) and node.implicit:
        casts.append(node)
        node = node.args[0]
    if not isinstance(node, Column):
        return None
    return node, casts


def _equality_term(term: Node) -> tuple[str, frozenset[object], KeyFunction] | None:
    if isinstance(term, Comparison) and term.op == "=" and not term.date_mixed:
        left, right = term.args
        if isinstance(left, Const):
            left, right = right, left
        items = [right]
        target = left
        t = term.compared_as
    elif isinstance(term, InList):
        target, *items = term.args
        t = term.compared_as
    else:
        return None
    consts = [c for c in items if isinstance(c, Const) and c.value is not None]
    if t.endswith("[]") or len(consts) != len(items):
        return None
    found = _column_under_casts(target)
    if found is None:
        return None
    col, casts = found
    key_fn = _key_function(col.type, [c.type for c in reversed(casts)], t)
    return col.name, frozenset(_key_of(t, c.value) for c in consts), key_fn


def _key_of(t: str, value: Any) -> object:
    if t == "bpchar":
        return str(value).rstrip(" ")
    return _canonical(value)


def _key_function(col_type: str, cast_chain: list[str], cmp_type: str) -> KeyFunction:
    if not cast_chain and cmp_type == col_type:
        # The router calls this for every change of the table: for the common key types
        # the parsed value is the key, so a builtin does it (int() raises ValueError on
        # bad text, which the router treats as "no shape").
        if col_type in ("int2", "int4", "int8"):
            return int
        if col_type == "text":
            return str
    parse = column_parser(col_type) or (lambda s: s)
    steps = []
    src = col_type
    for dst in cast_chain:
        fn = cast_function(src, dst)
        assert fn is not None
        steps.append(fn)
        src = dst

    def key_fn(text: str) -> object:
        if text is None:
            return None
        try:
            value = parse(text)
        except (ValueError, ArithmeticError) as e:
            raise WhereRuntimeError(f"cannot parse {text!r} as {col_type}: {e}") from None
        for step in steps:
            value = step(value)
        return _key_of(cmp_type, value)

    return key_fn
