"""The shapes a bench creates over the pgbench tables, and who subscribes to which.

Kinds (the mix is fixed by ``plan`` from the shape count and the pgbench scale):

- ``marker``: the latency marker table, whole (a row the bench updates at a fixed rate);
- ``history``: ``pgbench_history``, whole (no primary key: every column is the key);
- ``branch``: ``pgbench_branches WHERE bid = $1``, one per branch;
- ``tellers``: ``pgbench_tellers WHERE tid IN ($1, $2, $3)``;
- ``scan``: ``pgbench_tellers WHERE tbalance > $1``, a clause no equality index can
  serve (rows move in and out as balances change);
- ``accounts``: ``pgbench_accounts WHERE aid BETWEEN $1 AND $2``, the rest.

Each shape also knows its rows as SQL (for the end-of-run consistency check) and as a
Python predicate (for counting the changes it must deliver).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from pysync.bench.errors import BenchError

Row = dict[str, Any]

_WHERE = {
    "branch": ("bid = $1", "bid = %s"),
    "tellers": ("tid IN ($1, $2, $3)", "tid IN (%s, %s, %s)"),
    "scan": ("tbalance > $1", "tbalance > %s"),
    "accounts": ("aid BETWEEN $1 AND $2", "aid BETWEEN %s AND %s"),
}
_TABLE = {
    "history": "pgbench_history",
    "branch": "pgbench_branches",
    "tellers": "pgbench_tellers",
    "scan": "pgbench_tellers",
    "accounts": "pgbench_accounts",
}


@dataclass(frozen=True)
class ShapeSpec:
    id: int
    kind: str
    table: str
    params: tuple[int, ...] = ()

    @property
    def where(self) -> str | None:
        return _WHERE[self.kind][0] if self.kind in _WHERE else None

    def query(self) -> list[tuple[str, str]]:
        """The shape's part of a ``/v1/shape`` query string."""
        items = [("table", self.table)]
        if self.where is not None:
            items.append(("where", self.where))
            items += [(f"params[{i}]", str(v)) for i, v in enumerate(self.params, 1)]
        return items

    def select(self) -> tuple[sql.Composed, tuple[int, ...]]:
        """The shape's rows, every column, as SQL with bound parameters."""
        query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(self.table))
        if self.kind in _WHERE:
            query = sql.SQL("{} WHERE {}").format(query, sql.SQL(_WHERE[self.kind][1]))
        return query, self.params

    def describe(self) -> str:
        if self.where is None:
            return self.table
        text = self.where
        for i, v in reversed(list(enumerate(self.params, 1))):
            text = text.replace(f"${i}", str(v))
        return f"{self.table} WHERE {text}"


def plan(count: int, scale: int, marker_table: str) -> list[ShapeSpec]:
    """``count`` distinct shapes in the fixed mix described above."""
    rest = count - 2
    scans = max(1, rest // 100) if rest >= 4 else 0
    branches = min(scale, max(1, rest // 10)) if rest >= 2 else 0
    tellers = max(1, rest // 5) if rest >= 3 else 0
    teller_sets = _teller_sets(tellers, 10 * scale)
    accounts = rest - scans - branches - len(teller_sets)
    total_accounts = 100_000 * scale
    if accounts > total_accounts:
        raise BenchError(
            f"--shapes {count} is more than scale {scale} has distinct shapes for: "
            "raise --scale or lower --shapes"
        )
    shapes = [ShapeSpec(0, "marker", marker_table), ShapeSpec(1, "history", "pgbench_history")]

    def add(kind: str, params: tuple[int, ...]) -> None:
        shapes.append(ShapeSpec(len(shapes), kind, _TABLE[kind], params))

    for bid in range(1, branches + 1):
        add("branch", (bid,))
    for tids in teller_sets:
        add("tellers", tids)
    for i in range(scans):
        add("scan", ((i - scans // 2) * 1000,))
    if accounts:
        step = total_accounts // accounts
        width = max(1, min(1000, step))
        for i in range(accounts):
            start = 1 + i * step
            add("accounts", (start, start + width - 1))
    return shapes


def _teller_sets(count: int, tellers: int) -> list[tuple[int, int, int]]:
    chosen: dict[tuple[int, int, int], None] = {}
    rng = random.Random(7)
    attempts = 0
    while len(chosen) < count and attempts < 20 * count:
        attempts += 1
        first, second, third = sorted(rng.sample(range(1, tellers + 1), 3))
        chosen[(first, second, third)] = None
    return list(chosen)


def assign(shapes: list[ShapeSpec], subscribers: int, on_marker: int) -> list[ShapeSpec]:
    """The shape of each subscriber: ``on_marker`` on the marker, the others spread over
    the remaining shapes taking each kind in turn."""
    by_kind: dict[str, list[ShapeSpec]] = {}
    for shape in shapes[1:]:
        by_kind.setdefault(shape.kind, []).append(shape)
    order: list[ShapeSpec] = []
    queues = [list(reversed(group)) for group in by_kind.values()]
    while any(queues):
        for queue in queues:
            if queue:
                order.append(queue.pop())
    result = [shapes[0]] * on_marker
    result += [order[i % len(order)] for i in range(subscribers - on_marker)]
    return result


class Matcher:
    """Which of some shapes a row belongs to (for counting expected deliveries)."""

    def __init__(self, shapes: list[ShapeSpec]) -> None:
        self.whole: dict[str, list[int]] = {}
        self.branch: dict[int, list[int]] = {}
        self.tellers: dict[int, list[int]] = {}
        self.scan: list[tuple[int, int]] = []
        ranges = sorted((s.params[0], s.params[1], s.id) for s in shapes if s.kind == "accounts")
        self.range_starts = [r[0] for r in ranges]
        self.ranges = ranges
        for s in shapes:
            if s.kind in ("marker", "history"):
                self.whole.setdefault(s.table, []).append(s.id)
            elif s.kind == "branch":
                self.branch.setdefault(s.params[0], []).append(s.id)
            elif s.kind == "tellers":
                for tid in s.params:
                    self.tellers.setdefault(tid, []).append(s.id)
            elif s.kind == "scan":
                self.scan.append((s.params[0], s.id))
        self._by_table: dict[str, Callable[[Row], list[int]]] = {
            "pgbench_branches": self._branches,
            "pgbench_tellers": self._tellers,
            "pgbench_accounts": self._accounts,
        }

    def tables(self) -> set[str]:
        return {*self.whole, *self._by_table}

    def matching(self, table: str, row: Row) -> list[int]:
        found = list(self.whole.get(table, ()))
        by_table = self._by_table.get(table)
        if by_table is not None:
            found += by_table(row)
        return found

    def _branches(self, row: Row) -> list[int]:
        bid = row.get("bid")
        return self.branch.get(int(bid), []) if bid is not None else []

    def _tellers(self, row: Row) -> list[int]:
        found: list[int] = []
        tid = row.get("tid")
        if tid is not None:
            found += self.tellers.get(int(tid), [])
        balance = row.get("tbalance")
        if balance is not None:
            value = int(balance)
            found += [shape for threshold, shape in self.scan if value > threshold]
        return found

    def _accounts(self, row: Row) -> list[int]:
        aid = row.get("aid")
        if aid is None or not self.ranges:
            return []
        value = int(aid)
        # The ranges do not overlap (plan: width <= step): only the last one starting at
        # or before the value can hold it.
        i = bisect.bisect_right(self.range_starts, value) - 1
        if i >= 0 and value <= self.ranges[i][1]:
            return [self.ranges[i][2]]
        return []
