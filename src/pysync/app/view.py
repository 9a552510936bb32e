"""A shape materialised inside the app (``Sync.materialise``, ``Sync.subscribe``): its
rows by key, kept live, and the changes applied to them.

    async with sync.materialise(Todo, where=Todo.done.is_(False)) as view:
        view.rows                      # {key: Todo(...)} (plain dicts for a table name)
        async for change in view.changes():
            ...                        # Change("insert" | "update" | "delete" | "reset", ...)

The rows are kept by ``pysync.client.Shape`` (batches applied at each up-to-date, the
tags of subquery shapes, must-refetch), following the engine's log in this process
(embedded mode, ``log_stream``) or a ShapeStream over HTTP (http mode): one app code.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any, Literal

import msgspec

from pysync.client.shape import RowChange, Shape, ShapeUpdate
from pysync.client.values import Row

Operation = Literal["insert", "update", "delete", "reset"]
MAX_BEHIND = 10_000
"""Changes kept for a ``changes()`` reader that has not read them, by default."""


class Change(msgspec.Struct, frozen=True):
    """One change to ``View.rows``. ``row``: the row after it (for a delete, the row
    removed); ``old``: the row before it (None for an insert). ``reset``: the shape was
    replaced (a 409: rotated, invalidated, truncated), its rows are the new snapshot's
    (``key``, ``row`` and ``old`` are None); the new rows follow as inserts."""

    operation: Operation
    key: str | None
    row: Any
    old: Any


RESET = Change("reset", None, None, None)


class View:
    """The rows of one shape, by Electric's keys (``"public"."todos"/"1"``), live."""

    def __init__(
        self,
        shape: Shape,
        instance: Callable[[Row], Any] | None = None,
        on_close: Callable[[View], None] | None = None,
    ) -> None:
        self.shape = shape
        self._instance = instance
        self._instances: dict[str, tuple[Row, Any]] = {}
        """key -> (the row, its model instance): built again only when the row changed."""
        self._on_close = on_close

    @property
    def rows(self) -> dict[str, Any]:
        """Key -> row: a dict of column values, or a model instance (detached, a new one
        for each version of the row)."""
        rows = self.shape.rows
        make = self._instance
        if make is None:
            return rows
        cache = self._instances
        result = {}
        for key, row in rows.items():
            cached = cache.get(key)
            if cached is None or cached[0] is not row:
                cached = cache[key] = (row, make(row))
            result[key] = cached[1]
        if len(cache) > len(result):
            self._instances = {key: cache[key] for key in result}
        return result

    @property
    def handle(self) -> str | None:
        return self.shape.handle

    @property
    def up_to_date(self) -> bool:
        return self.shape.up_to_date

    @property
    def error(self) -> BaseException | None:
        """Why the view stopped following its shape, once it has."""
        return self.shape.error

    async def changes(self, *, max_behind: int | None = MAX_BEHIND) -> AsyncGenerator[Change]:
        """Every later change applied to ``rows``, in order, a ``reset`` before the rows
        of a new snapshot. The view never waits for this reader: up to ``max_behind``
        changes it has not read are kept for it; past that it raises
        ``pysync.client.FellBehind`` naming how far behind it is (None: no bound)."""
        async for update in self.shape.subscribe(max_behind=max_behind):
            for change in self._changes(update):
                yield change

    def _changes(self, update: ShapeUpdate) -> list[Change]:
        changes = [RESET] if update.reset else []
        changes.extend(self._change(change) for change in update.changes)
        return changes

    def _change(self, change: RowChange) -> Change:
        make = self._instance
        row, old = change.row, change.old
        if make is not None:
            row = make(row)
            old = make(old) if old is not None else None
        return Change(change.operation, change.key, row, old)  # type: ignore[arg-type]

    async def wait_up_to_date(self, timeout: float | None = None) -> None:
        await self.shape.wait_up_to_date(timeout)

    async def wait_for_txid(self, txid: int | str, timeout: float | None = None) -> None:
        """Until Postgres transaction ``txid`` is in ``rows``: the ``txid`` a Writer
        returns, or ``pg_current_xact_id()`` (a 64-bit xid8: its 32-bit xid is compared).
        A transaction that changed nothing in this shape never arrives: give a timeout."""
        await self.shape.wait_for_txid(int(txid) & 0xFFFFFFFF, timeout)

    async def close(self) -> None:
        await self.shape.close()
        stream = self.shape.stream
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        if self._on_close is not None:
            self._on_close(self)

    async def __aenter__(self) -> View:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
