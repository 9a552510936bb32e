"""Shape WHERE clauses: validation (Electric's WHERE language), in-process evaluation on
replicated rows, SQL for the snapshot query, and equality routing keys.

    where = compile_where("user_id = $1 AND title ILIKE '%x%'", table, {1: "5"})
    matches = where.bind(column_names)      # once per relation layout
    matches(["5", "Fix x", None])           # True / False / None (SQL NULL)
    sql, params = where.to_sql()            # for "SELECT ... WHERE " + sql

Evaluation errors (integer overflow, division by zero, unparsable values) raise
``WhereRuntimeError``: Postgres would raise for the same row, so callers treat the row as
not matching.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from pysync.postgres.catalog import Table

from . import _runtime as rt
from ._check import check_clause
from ._compile import Compiler, column_parser
from ._ir import Node, WhereError, WhereRuntimeError
from ._limits import MAX_PARAMS, MAX_PARAMS_LENGTH, over_limit
from ._memo import SizedCache
from ._render import normalized as _normalized
from ._render import to_sql as _to_sql

__all__ = ["RangeIndex", "Where", "WhereError", "WhereRuntimeError", "compile_where"]

Evaluator = Callable[[Sequence[str | None]], bool | None]
KeyFunction = Callable[[str], object]


class Where:
    """A validated WHERE clause for one table (build with ``compile_where``)."""

    def __init__(self, clause: str, tree: Node, columns: frozenset[str]) -> None:
        self.clause = clause
        self.tree = tree
        self.columns = columns
        self.normalized = _normalized(tree)
        self._bound: dict[tuple[str, ...], Evaluator] = {}
        self._bind_lock = threading.Lock()  # a cached Where is shared between threads

    def __repr__(self) -> str:
        return f"Where({self.normalized!r})"

    def bind(self, column_names: Sequence[str]) -> Evaluator:
        """An evaluator for rows whose values come in the order of ``column_names``."""
        key = tuple(column_names)
        with self._bind_lock:
            cached = self._bound.get(key)
            if cached is not None:
                return cached
            positions = {name: i for i, name in enumerate(key)}
            missing = self.columns - positions.keys()
            if missing:
                raise ValueError(f"the row has no column(s) {', '.join(sorted(missing))}")
            evaluator: Evaluator = Compiler(positions).compile(self.tree)
            self._bound[key] = evaluator
            return evaluator

    def to_sql(self) -> tuple[str, list[object]]:
        """SQL for the snapshot query's WHERE with psycopg ``%s`` placeholders."""
        return _to_sql(self.tree)

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


def compile_where(clause: str, table: Table, params: Mapping[int, str] | None = None) -> Where:
    """Validate and type-check ``clause`` against ``table``; raises WhereError.

    A pure function of its arguments, safe to call from several threads at once; every
    input is bounded (``_limits``) before work is done on it.
    """
    frozen = _bounded_params(params or {})
    key = (clause, table, frozen)
    where = _COMPILED.get(key)
    if where is None:
        tree, columns = check_clause(clause, table, dict(frozen))
        where = Where(clause, tree, columns)
        _COMPILED.put(key, where, len(clause) + sum(len(v) for _, v in frozen))
    return where


def _bounded_params(params: Mapping[int, str]) -> tuple[tuple[int, str], ...]:
    if len(params) > MAX_PARAMS:
        raise WhereError(over_limit("number of parameters", MAX_PARAMS))
    values = [(int(k), str(v)) for k, v in params.items()]
    if sum(len(v) for _, v in values) > MAX_PARAMS_LENGTH:
        raise WhereError(over_limit("total length of parameter values", MAX_PARAMS_LENGTH))
    return tuple(sorted(values))


# Compiled clauses by (clause, table, params), bounded by their text as the parse cache.
_COMPILED: SizedCache[tuple[str, Table, tuple[tuple[int, str], ...]], Where] = SizedCache(
    max_entries=1024, max_total_cost=512 * 1024, max_entry_cost=8 * 1024)


# ---------------------------------------------------------------- equality routing

_NAN_KEY = ("NaN",)


def _canonical(value: Any) -> object:
    """Hashable key under which values equal in Postgres collide (NaN equals NaN there)."""
    if isinstance(value, float) and math.isnan(value):
        return _NAN_KEY
    if isinstance(value, Decimal) and value.is_nan():
        return _NAN_KEY
    if isinstance(value, tuple):  # interval: compared by its span
        from pysync.postgres.types import interval_key

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
        if node.kind == "and":
            todo.extend(reversed(node.args))
        else:
            terms.append(node)
    return terms


def _range_index(tree: Node) -> RangeIndex | None:
    # (column, compared as) -> [low, low_inclusive, high, high_inclusive, key_fn]: terms
    # combine only when they compare as one type (the key function casts as Postgres does).
    bounds: dict[tuple[str, str], list[Any]] = {}
    for term in _conjuncts(tree):
        if term.kind != "op" or term.name not in _FLIPPED or term.extra.get("cmp_type") not in _RANGE_TYPES:
            continue
        left, right = term.args
        op = term.name
        if left.kind == "const":
            left, right, op = right, left, _FLIPPED[op]
        if right.kind != "const" or right.value is None:
            continue
        found = _column_under_casts(left)
        if found is None:
            continue
        col, casts = found
        t = term.extra["cmp_type"]
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
        bounds.items(), key=lambda item: (item[1][0] is not None) + (item[1][2] is not None))
    return RangeIndex(name, low, low_inc, high, high_inc, key_fn)


def _equality_index(tree: Node) -> tuple[str, frozenset[object], KeyFunction] | None:
    candidates = tree.args if tree.kind == "and" else (tree,)
    for term in candidates:
        found = _equality_term(term)
        if found is not None:
            return found
    return None


def _column_under_casts(node: Node) -> tuple[Node, list[Node]] | None:
    """The column under a chain of implicit numeric/datetime casts (e.g. int4 -> numeric)."""
    casts: list[Node] = []
    while node.kind == "cast" and node.extra.get("implicit"):
        casts.append(node)
        node = node.args[0]
    if node.kind != "col":
        return None
    return node, casts


def _equality_term(term: Node) -> tuple[str, frozenset[object], KeyFunction] | None:
    if term.kind == "op" and term.name == "=" and "cmp_type" in term.extra:
        left, right = term.args
        if left.kind == "const":
            left, right = right, left
        consts = [right]
        target = left
    elif term.kind == "in":
        target, *consts = term.args
    else:
        return None
    t = term.extra["cmp_type"]
    if t.endswith("[]") or not all(c.kind == "const" and c.value is not None for c in consts):
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
    parse = column_parser(col_type) or (lambda s: s)
    steps = []
    src = col_type
    for dst in cast_chain:
        fn = rt.cast_function(src, dst)
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
