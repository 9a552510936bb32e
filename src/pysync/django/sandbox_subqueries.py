"""Shapes with subqueries (``IN (SELECT ...)``) in the sandbox (``sandbox.py``), with the
engine's semantics: each is the engine's ``SubqueryShape`` (views of its dependencies,
move-out / move-in, tags and active conditions as Electric sends them), driven by the
sandbox instead of the replication stream.

A dependency here is ``Values``: the subquery's values in the test's transaction, read
again whole whenever its tables may have changed (innermost first: a nested subquery's
clause reads its own subqueries' values). When values come or go, its dependents'
views hear it as they hear a ``Dependency`` of the engine, and each shape drains: a
move-out event for values that can only take rows out, a move-in (event, the rows it
brings, a snapshot-end) for values that can bring rows in, its query run at once in the
test's transaction. ``Moves`` is what a ``SubqueryShape`` asks of its manager.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from psycopg import sql

from pysync.postgres.catalog import Table
from pysync.postgres.snapshot import SnapshotInfo
from pysync.shapes.consumer import Appender
from pysync.shapes.definition import Subquery
from pysync.shapes.querying import move_in_where, row_json_query, subquery_rows_query
from pysync.shapes.subqueries.shape import Phase, SubqueryShape
from pysync.shapes.subqueries.views import Key, View

if TYPE_CHECKING:
    from pysync.django.sandbox import SandboxShape


class Values:
    """The values of one subquery in the test's transaction (the ``counts`` a
    dependency keeps, which its dependents' views read); shared by equal subqueries."""

    def __init__(self, subquery: Subquery, inner: Sequence[Values]) -> None:
        self.subquery = subquery
        self.inner = list(inner)
        """The values of its own subqueries, by dependency number (as views: their
        ``texts()`` are bound into its clause)."""
        self.counts: dict[Key, int] = {}
        self.null_keys = 0
        self.dependents: list[View] = []
        self.layer: int = 1 + max((v.layer for v in inner), default=-1)
        self.tables: tuple[Table, ...] = (
            subquery.table,
            *(t for v in self.inner for t in v.tables),
        )
        """Every table its values depend on."""

    def texts(self) -> list[Key]:
        return list(self.counts)

    def query(self) -> tuple[sql.Composed, list[object]]:
        """Its rows: identity columns' texts, then the selected columns' texts."""
        return subquery_rows_query(self.subquery, self.inner, self.subquery.columns)

    def counted(self, rows: Sequence[Sequence[str | None]]) -> dict[Key, int]:
        """The values of ``rows`` (as ``query`` returns them), counted."""
        skip = len(self.subquery.table.identity)
        single = len(self.subquery.columns) == 1
        counts: dict[Key, int] = {}
        for row in rows:
            key: Key = row[skip] if single else tuple(row[skip:])
            counts[key] = counts.get(key, 0) + 1
        return counts

    def differs(self, counts: dict[Key, int]) -> bool:
        return counts.keys() != self.counts.keys()

    def take(self, counts: dict[Key, int], xid: int) -> None:
        """The values are now ``counts``: the dependents' views hear which came and went
        (keeping what they had until their shapes apply it), as from a ``Dependency``."""
        old = self.counts
        flips: dict[Key, bool] = {key: True for key in old if key not in counts}
        flips.update({key: False for key in counts if key not in old})
        self.counts = counts
        self.null_keys = sum(1 for key in counts if _has_null(key))
        if flips:
            for view in list(self.dependents):
                view.changed(flips, xid)


class Moves:
    """The manager of the sandbox's subquery shapes (``subqueries.shape.Manager``): their
    entries go to the sandbox's logs, a move-in's query runs at once in the test's
    transaction, and nothing is ever held (there is no stream to wait for)."""

    def __init__(
        self,
        append: Callable[[SandboxShape, list[bytes]], None],
        read: Callable[[Any, list[object]], tuple[list[Any], SnapshotInfo]],
        invalidate: Callable[[SandboxShape, str], None],
        sequence: Callable[[], int],
    ) -> None:
        """``append``: entries after a shape's log; ``read``: rows of a query in the
        test's transaction and its snapshot; ``invalidate``: a shape clients must
        refetch; ``sequence``: the sandbox's step (its log's transaction position)."""
        self._append = append
        self._read = read
        self._invalidate = invalidate
        self._sequence = sequence
        self.to_drain: dict[SubqueryShape, None] = {}
        """Shapes whose views changed, drained at the end of the step."""
        self._appender = _SandboxAppender(append)

    def shape(self, sandboxed: SandboxShape, deps: Sequence[Values]) -> SubqueryShape:
        """The engine's subquery shape for ``sandboxed`` (its consumer), steady: its
        views follow ``deps`` as they are now."""
        subquery = SubqueryShape(cast(Any, sandboxed), self, cast(Any, deps))
        subquery.start_snapshot()
        subquery.phase = Phase.STEADY
        return subquery

    def drain(self) -> list[SubqueryShape]:
        """Move-outs and move-ins of the shapes whose views changed in this step."""
        shapes, self.to_drain = list(self.to_drain), {}
        for shape in shapes:
            shape.drain(self._sequence())
        return shapes

    # -- subqueries.shape.Manager ----------------------------------------------------

    @property
    def position(self) -> int:
        # A move-in's rows are read in the test's transaction: no transaction can come
        # before them later, so they are spliced at once.
        return sys.maxsize

    @property
    def last_tx(self) -> int:
        return self._sequence()

    def recent(self) -> tuple[int, ...]:
        return ()

    def changed(self, owner: SubqueryShape) -> None:
        self.to_drain[owner] = None

    def held(self, shape: SubqueryShape) -> None:
        """Never called: the sandbox gives its shapes no transactions to hold."""

    def invalidate(self, shape: SubqueryShape, reason: str) -> None:
        shape.close()
        self.to_drain.pop(shape, None)
        self._invalidate(cast(Any, shape.consumer), reason)

    def index_add(self, shape: SubqueryShape, number: int, keys: Any) -> None:
        """No router: the sandbox reads its shapes itself."""

    def index_remove(self, shape: SubqueryShape, number: int, keys: Any) -> None:
        """No router."""

    def query_move_in(self, shape: SubqueryShape, retry: bool = False) -> None:
        move = shape.move
        assert move is not None
        tagging = shape.tagging
        query, params = row_json_query(
            shape.shape,
            extra_headers={"is_move_in": True},
            tagging=tagging,
            where_sql=move_in_where(shape.shape, tagging.views, move.before),
        )
        rows, info = self._read(query, params)
        shape.query_done(info, [text.encode() for (text,) in rows])

    def wait_for_position(self, shape: SubqueryShape) -> None:
        """Never called: ``position`` is past every snapshot."""

    def moved(self, shape: SubqueryShape) -> None:
        """Nothing waits on a move."""

    @property
    def appender(self) -> Appender:
        return self._appender


class _SandboxAppender(Appender):
    """A subquery shape's events and move-in rows, after its log in the sandbox."""

    __slots__ = ("_append",)

    def __init__(self, append: Callable[[SandboxShape, list[bytes]], None]) -> None:
        super().__init__()
        self._append = append

    def after_log(self, consumer: Any, tx: int, payloads: list[bytes]) -> None:
        self._append(consumer, payloads)


def _has_null(key: Key) -> bool:
    return key is None or (isinstance(key, tuple) and None in key)
