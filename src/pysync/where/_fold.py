"""Constant folding, as Postgres' planner does it (``eval_const_expressions``).

Postgres simplifies a clause before it reads a row, and that decides which rows can
raise: ``(i * 1000000 > 0) OR 1 = 1`` is ``TRUE`` (no row overflows), ``i * 1000000 >
NULL`` is ``NULL`` (a strict operator with a NULL argument is never called), and
``i > 0 OR 1 / 0 = 1`` fails while planning, for every row. The typed tree is folded the
same way, so the evaluator and the snapshot query (rendered from the folded tree) see
the same expression:

* a node whose arguments are all constants is evaluated now; if that raises, so does
  Postgres' planner: the clause is a ``WhereError``;
* a strict operation (operators, casts, LIKE, lower/upper, array_ndims) with a NULL
  constant argument is NULL;
* ``AND`` / ``OR`` drop constant TRUE / FALSE (and NULL) terms, and a constant FALSE /
  TRUE term decides the whole (terms with a subquery stay beside it); ``NOT`` of a
  constant is a constant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ._compile import Compiler
from ._ir import (
    And,
    Call,
    Cast,
    Column,
    Comparison,
    Const,
    Node,
    Operator,
    Or,
    Sublink,
    WhereError,
    WhereRuntimeError,
)
from .runtime.enums import EnumType

# Never folded: they read a row or a dependency.
_LEAVES = (Column, Const, Sublink)
# Strict operations: a NULL argument makes them NULL without a call. (The registry's
# functions that are not strict, coalesce, greatest, least, concat, and the array
# functions look at NULL arguments themselves.)
_STRICT = (Operator, Comparison, Cast, Call)
_NO_ROW: tuple[str | None, ...] = ()


def fold(node: Node, enums: Mapping[str, EnumType] | None = None) -> Node:
    """``node`` with its constant parts folded (a new tree; ``node`` is unchanged);
    ``enums``: the clause's enum types (a label cast from text is one of theirs)."""
    memo: dict[int, Node] = {}
    # post-order without recursion (a chain of AND terms may be thousands long)
    stack: list[tuple[Node, bool]] = [(node, False)]
    while stack:
        n, done = stack.pop()
        if id(n) in memo:
            continue
        if not done:
            stack.append((n, True))
            stack.extend((a, False) for a in n.args if id(a) not in memo)
            continue
        args = tuple(memo[id(a)] for a in n.args)
        memo[id(n)] = _fold_one(n, args, enums)
    return memo[id(node)]


def _null(n: Node) -> Node:
    return Const(type=n.type, value=None, pos=n.pos)


def _fold_one(n: Node, args: tuple[Node, ...], enums: Mapping[str, EnumType] | None) -> Node:
    if isinstance(n, _LEAVES):
        return n
    if args != n.args:
        n = dataclasses.replace(n, args=args)
    if isinstance(n, And | Or):
        return _fold_logic(n)
    consts = [a for a in args if isinstance(a, Const)]
    strict = isinstance(n, _STRICT) and not (isinstance(n, Call) and not n.overload.strict)
    if strict and any(a.value is None for a in consts) and _renderable(n.type):
        return _null(n)
    if len(consts) != len(args) or not _renderable(n.type):
        return n
    try:
        value = Compiler({}, enums=enums).compile(n)(_NO_ROW)
    except (WhereRuntimeError, ValueError, ArithmeticError) as exc:
        raise WhereError(str(exc) or type(exc).__name__, n.pos) from None
    return Const(type=n.type, value=value, pos=n.pos)


def _fold_logic(n: And | Or) -> Node:
    decisive = isinstance(n, Or)  # TRUE decides an OR, FALSE an AND
    kept: list[Node] = []
    has_null = False
    for a in n.args:
        if not isinstance(a, Const):
            kept.append(a)
        elif a.value is None:
            has_null = True
        elif a.value is decisive:
            decided = Const(type="bool", value=decisive, pos=n.pos)
            # a subquery stays in the tree, after the deciding constant (the evaluator
            # stops there): the shape's dependencies and DNF positions come from the tree
            kept = [b for b in n.args if _has_sublink(b)]
            return type(n)(type="bool", args=(decided, *kept), pos=n.pos) if kept else decided
    if has_null:
        kept.append(Const(type="bool", value=None, pos=n.pos))
    if not kept:
        return Const(type="bool", value=not decisive, pos=n.pos)
    if len(kept) == 1:
        return kept[0]
    return type(n)(type="bool", args=tuple(kept), pos=n.pos)


def _has_sublink(node: Node) -> bool:
    pending = [node]
    while pending:
        n = pending.pop()
        if isinstance(n, Sublink):
            return True
        pending.extend(n.args)
    return False


def _renderable(t: str) -> bool:
    """Whether a constant of type t can be written back as SQL (enums can: a clause's
    enum types are its columns', whose SQL names the renderer has)."""
    return "unknown" not in t
