"""A clause with ``IN (SELECT ...)`` in disjunctive normal form, as Electric's DNF plan.

NOTs are pushed down to the leaves (De Morgan), ANDs distributed over ORs: the clause is
an OR of disjuncts, each an AND of literals (a leaf, possibly negated). Every literal of
every disjunct is a *position*, numbered disjunct by disjunct; a leaf in two disjuncts
has two positions. Tags and ``active_conditions`` are laid out by positions:

    a IN (SELECT ...) AND (b = 1 OR c = 2)
    -> [a IN sq, b = 1] OR [a IN sq, c = 2]     positions 0, 1 | 2, 3

Three-valued logic survives the rewriting (Kleene's NOT, AND and OR obey De Morgan and
distribute), so a row is in the shape exactly when some disjunct has every literal TRUE.
A dependency's *polarity* is whether its sublinks are negated; one used both ways in a
clause is refused, as Electric does: then a dependency gaining values only ever adds rows
(positive) or only ever removes them (negated).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._ir import And, Column, Node, Not, Or, Sublink, WhereError

MAX_DISJUNCTS = 100
"""Electric's limit."""

POLARITY_MESSAGE = (
    "a subquery dependency cannot be used with both positive and negative polarity in the "
    "same filter"
)


@dataclass(frozen=True, eq=False)
class Position:
    node: Node
    """The leaf: a sublink or any other boolean expression."""
    negated: bool

    @property
    def dependency(self) -> int | None:
        return self.node.dependency if isinstance(self.node, Sublink) else None

    @property
    def columns(self) -> tuple[str, ...]:
        """The tested columns of a sublink (a tag hashes their values)."""
        if not isinstance(self.node, Sublink):
            return ()
        return tuple(a.name for a in self.node.args if isinstance(a, Column))


@dataclass(frozen=True, eq=False)
class Plan:
    positions: tuple[Position, ...]
    disjuncts: tuple[tuple[int, ...], ...]
    """The positions of each disjunct."""
    negated: dict[int, bool]
    """Per dependency: are its sublinks negated (NOT IN)?"""

    def dependency_positions(self, dependency: int) -> tuple[int, ...]:
        return tuple(i for i, p in enumerate(self.positions) if p.dependency == dependency)


def plan(tree: Node) -> Plan:
    """The DNF plan of a checked clause with sublinks; WhereError when a sublink is not a
    term of AND/OR/NOT, the form has more than MAX_DISJUNCTS disjuncts, or a dependency is
    used with both polarities."""
    count = _count(tree, False)
    if count > MAX_DISJUNCTS:
        shown = (
            f"more than {MAX_DISJUNCTS * MAX_DISJUNCTS}"
            if count > MAX_DISJUNCTS * MAX_DISJUNCTS
            else count
        )
        raise WhereError(
            "WHERE clause too complex for DNF decomposition "
            f"({shown} disjuncts exceeds limit of {MAX_DISJUNCTS})"
        )
    disjuncts = _dnf(tree, False)
    positions: list[Position] = []
    layout: list[tuple[int, ...]] = []
    for conjunction in disjuncts:
        start = len(positions)
        positions.extend(Position(leaf, negated) for leaf, negated in conjunction)
        layout.append(tuple(range(start, len(positions))))
    negated: dict[int, bool] = {}
    for position in positions:
        if not isinstance(position.node, Sublink):
            _no_nested_sublink(position.node)
            continue
        dep = position.node.dependency
        if negated.setdefault(dep, position.negated) != position.negated:
            raise WhereError(POLARITY_MESSAGE)
    return Plan(tuple(positions), tuple(layout), negated)


def _count(node: Node, negated: bool) -> int:
    """Disjuncts of the DNF, computed without expanding it (capped: a product of many ORs
    would otherwise be astronomically large)."""
    cap = MAX_DISJUNCTS * MAX_DISJUNCTS + 1
    if isinstance(node, Not):
        return _count(node.args[0], not negated)
    if not isinstance(node, And | Or):
        return 1
    counts = [_count(a, negated) for a in node.args]
    if isinstance(node, Or) != negated:
        return min(cap, sum(counts))
    product = 1
    for c in counts:
        product = min(cap, product * c)
    return product


def _dnf(node: Node, negated: bool) -> list[list[tuple[Node, bool]]]:
    if isinstance(node, Not):
        return _dnf(node.args[0], not negated)
    if not isinstance(node, And | Or):
        return [[(node, negated)]]
    parts = [_dnf(a, negated) for a in node.args]
    if isinstance(node, Or) != negated:  # OR, or NOT AND
        return [conjunction for part in parts for conjunction in part]
    product: list[list[tuple[Node, bool]]] = [[]]
    for part in reversed(parts):  # Electric's order: the first term's disjuncts outermost
        product = [conjunction + rest for conjunction in part for rest in product]
    return product


def _no_nested_sublink(node: Node) -> None:
    pending = list(node.args)
    while pending:
        n = pending.pop()
        if isinstance(n, Sublink):
            raise WhereError("`IN (SELECT ...)` can only be combined with AND, OR and NOT", n.pos)
        pending.extend(n.args)
