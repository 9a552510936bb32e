"""A shape materialised in memory: its rows by key, kept up to date by a ShapeStream.

Changes are buffered until the batch's ``up-to-date`` and then applied together, so
``rows`` only ever shows states the server reached at a transaction boundary; a
must-refetch swaps in the new snapshot in one step at its first up-to-date (readers never
see the shape empty in between).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

import msgspec

from pysync.client.messages import (
    MUST_REFETCH,
    UP_TO_DATE,
    ChangeMessage,
    ControlMessage,
    EventMessage,
    Message,
)
from pysync.client.tags import TagTracker
from pysync.client.values import Row

_TXIDS_KEPT = 100_000
"""How many recently seen transaction ids ``wait_for_txid`` remembers."""


class MessageSource(Protocol):
    """What a Shape follows: a ShapeStream (HTTP), or a shape log read in-process."""

    handle: str | None
    offset: str

    def __aiter__(self) -> AsyncIterator[Message]: ...


class FellBehind(Exception):
    """A subscriber read ``Shape.subscribe`` so slowly that more than its bound of changes
    waited for it: they were dropped (``Shape.rows`` has them all applied)."""

    def __init__(self, behind: int, bound: int) -> None:
        super().__init__(
            f"the subscriber fell {behind} changes behind the shape, more than its bound "
            f"(max_behind={bound}); the changes it did not read were dropped: re-read the "
            "rows, then subscribe again (or raise max_behind)"
        )
        self.behind = behind
        self.bound = bound


class _Subscriber:
    """One ``subscribe`` iterator's updates not read yet, and how many changes they hold."""

    __slots__ = ("behind", "bound", "pending", "queue")

    def __init__(self, bound: int | None) -> None:
        self.queue: asyncio.Queue[ShapeUpdate | None] = asyncio.Queue()
        self.bound = bound
        self.pending = 0
        self.behind = 0
        """Set (the changes waiting) once ``bound`` was passed: the iterator raises."""

    def put(self, update: ShapeUpdate) -> None:
        if self.behind:
            return
        pending = self.pending + len(update.changes)
        # A reader that read everything takes any batch (a new snapshot's rows may be
        # more than the bound); one with unread batches is behind past the bound.
        if self.bound is not None and pending > self.bound and not self.queue.empty():
            # Nothing more is kept for it: its memory stays bounded.
            self.behind = pending
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)
            return
        self.pending = pending
        self.queue.put_nowait(update)


class RowChange(msgspec.Struct, frozen=True):
    """One applied change: ``row`` is the row after it (for a delete: the row removed),
    ``old`` the row before it (None for an insert of a new key)."""

    operation: str
    key: str
    row: Row
    old: Row | None


class ShapeUpdate(msgspec.Struct, frozen=True):
    """What one up-to-date batch did to ``Shape.rows``. ``reset``: the rows were replaced
    by a new snapshot (after a must-refetch) before ``changes`` were applied."""

    changes: tuple[RowChange, ...]
    reset: bool
    txids: frozenset[int]


class Shape:
    """``rows`` (by key) of one shape, following a live stream in a background task.

    ``await shape.wait_up_to_date()``, ``await shape.wait_for_txid(txid)``,
    ``async for update in shape.subscribe()``; ``await shape.close()`` (or ``async with``)."""

    def __init__(self, stream: MessageSource, *, changes_only: bool = False) -> None:
        self.rows: dict[str, Row] = {}
        self.stream = stream
        self._changes_only = changes_only
        self._pending: list[ChangeMessage | EventMessage] = []
        self._tags = TagTracker()
        """Tags of the rows of a shape with ``IN (SELECT ...)`` (move-in / move-out)."""
        self._reset = False
        self._txids: dict[int, None] = {}  # insertion-ordered set, oldest first
        self._snapshot: ControlMessage | None = None
        """The snapshot-end of the rows' initial snapshot: the transactions it contains."""
        self._pending_snapshot: ControlMessage | None = None
        self._up_to_date = asyncio.Event()
        self._applied = asyncio.Condition()
        self._subscribers: list[_Subscriber] = []
        self.error: BaseException | None = None
        """Why the stream stopped (a ClientError from the server, say), once it has."""
        self._stopped = False
        self._task = asyncio.create_task(self._follow())

    @property
    def up_to_date(self) -> bool:
        return self._up_to_date.is_set()

    @property
    def handle(self) -> str | None:
        return self.stream.handle

    @property
    def offset(self) -> str:
        return self.stream.offset

    async def wait_up_to_date(self, timeout: float | None = None) -> None:
        """Until the rows reflect the server's log up to a recent up-to-date."""
        await self._until(self._up_to_date.is_set, timeout)

    async def wait_for_txid(self, txid: int | str, timeout: float | None = None) -> None:
        """Until the effects of Postgres transaction ``txid`` (the 32-bit xid a writer
        returns) are in ``rows``: one of its changes arrived, or it committed before the
        shape's snapshot was taken. A later transaction that changed nothing in this shape
        never arrives: give a timeout."""
        wanted = int(txid)
        await self._until(
            lambda: wanted in self._txids or _in_snapshot(self._snapshot, wanted), timeout
        )

    async def subscribe(self, *, max_behind: int | None = None) -> AsyncGenerator[ShapeUpdate]:
        """Every later batch applied to ``rows``; ends when the shape is closed.

        The shape never waits for a subscriber: what it has not read is kept for it, up
        to ``max_behind`` changes in batches it has not started reading (None: no bound),
        past which it raises FellBehind."""
        subscriber = _Subscriber(max_behind)
        self._subscribers.append(subscriber)
        try:
            while (update := await subscriber.queue.get()) is not None:
                subscriber.pending -= len(update.changes)
                yield update
            if subscriber.behind and subscriber.bound is not None:
                raise FellBehind(subscriber.behind, subscriber.bound)
            if self.error is not None:
                raise self.error
        finally:
            self._subscribers.remove(subscriber)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def __aenter__(self) -> Shape:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _until(self, condition: Any, timeout: float | None) -> None:
        async def wait() -> None:
            async with self._applied:
                while not condition():
                    if self._stopped:
                        raise self.error or RuntimeError("the shape is closed")
                    await self._applied.wait()

        await asyncio.wait_for(wait(), timeout)

    async def _follow(self) -> None:
        try:
            async for message in self.stream:
                await self._receive(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # kept for the waiters and subscribers, which re-raise it
            self.error = exc
        finally:
            self._stopped = True
            for subscriber in self._subscribers:
                subscriber.queue.put_nowait(None)
            async with self._applied:
                self._applied.notify_all()

    async def _receive(self, message: Message) -> None:
        if isinstance(message, ChangeMessage):
            self._pending.append(message)
        elif isinstance(message, ControlMessage):
            if message.control == UP_TO_DATE:
                await self._apply_batch()
            elif message.control == MUST_REFETCH:
                self._pending.clear()
                self._pending_snapshot = None
                self._reset = True
                self._up_to_date.clear()
            elif message.control == "snapshot-end":
                self._pending_snapshot = message
        elif isinstance(message, EventMessage):
            self._pending.append(message)

    def _apply_event(self, rows: dict[str, Row], event: EventMessage) -> list[RowChange]:
        """A move-out drops the rows no longer in the shape (as deletes); a move-in marks
        rows' conditions active again (its rows arrive as inserts)."""
        if event.event == "move-in":
            self._tags.move_in(event.patterns)
            return []
        if event.event != "move-out":
            return []
        changes = []
        for key in self._tags.move_out(event.patterns):
            old = rows.pop(key, None)
            if old is not None:
                changes.append(RowChange("delete", key, old, old))
        return changes

    async def _apply_batch(self) -> None:
        reset, self._reset = self._reset, False
        if reset:
            self.rows = {}
            self._tags.reset()
            self._snapshot = None
        if self._pending_snapshot is not None:
            self._snapshot, self._pending_snapshot = self._pending_snapshot, None
        changes = []
        txids: set[int] = set()
        rows = self.rows
        for message in self._pending:
            if isinstance(message, EventMessage):
                changes.extend(self._apply_event(rows, message))
                txids.update(message.txids)
                continue
            change = self._apply(rows, message)
            if change is not None:
                changes.append(change)
                self._tags.change(message)
            txids.update(message.headers.txids)
        self._pending = []
        for txid in txids:
            self._txids[txid] = None
        while len(self._txids) > _TXIDS_KEPT:
            del self._txids[next(iter(self._txids))]
        self._up_to_date.set()
        update = ShapeUpdate(tuple(changes), reset, frozenset(txids))
        for subscriber in self._subscribers:
            subscriber.put(update)
        async with self._applied:
            self._applied.notify_all()

    def _apply(self, rows: dict[str, Row], message: ChangeMessage) -> RowChange | None:
        key, operation = message.key, message.headers.operation
        old = rows.get(key)
        if operation == "insert":
            row = dict(message.value)
        elif operation == "update":
            if old is None and self._changes_only:
                return None  # changes_only: a row this client never loaded
            row = {**old, **message.value} if old is not None else dict(message.value)
        elif operation == "delete":
            if old is None:
                return None
            del rows[key]
            return RowChange(operation, key, old, old)
        else:
            return None
        rows[key] = row
        return RowChange(operation, key, row, old)


def _in_snapshot(snapshot: ControlMessage | None, txid: int) -> bool:
    """Whether 32-bit xid ``txid`` committed before ``snapshot`` (a snapshot-end, whose
    xmin/xmax/xip_list are 64-bit xid8s): visible to it, so its rows are in the snapshot.
    As Postgres compares xids, ``txid`` is within 2**31 of xmax, before or after it."""
    if snapshot is None or snapshot.xmin is None or snapshot.xmax is None:
        return False
    xmin, xmax = int(snapshot.xmin), int(snapshot.xmax)
    distance = (txid - xmax) & 0xFFFFFFFF
    if distance >= 1 << 31:
        distance -= 1 << 32
    full = xmax + distance
    if full < xmin:
        return True
    return full < xmax and str(full) not in snapshot.xip_list
