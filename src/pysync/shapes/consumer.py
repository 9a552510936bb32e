"""One shape being served: its log, where it stands, and the operations on it.

A consumer moves through explicit states:

    SNAPSHOTTING --snapshot written--> LIVE --invalidated/deleted/evicted--> GONE
         \\--snapshot failed--> FAILED

While SNAPSHOTTING it is already registered with the collector: transactions that the
snapshot cannot have seen are buffered, then appended after the snapshot in commit
order. ``recorded`` says the shape is in the registry on disk (it survives a restart).
The HTTP layer reads and waits through this API only.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from pysync.log.log import LogSlice, ShapeLog
from pysync.log.offset import LogOffset
from pysync.postgres.pgoutput import Relation
from pysync.postgres.snapshot import SnapshotInfo, after_snapshot
from pysync.shapes.changes import Converter, Entry, ShapeConverter
from pysync.shapes.definition import Shape, ShapeDefinition

if TYPE_CHECKING:
    from pysync.shapes.subqueries.shape import SubqueryShape

Encoded = list[tuple[LogOffset, bytes]]

# LogOffset(tx, op) without the NamedTuple's Python-level __new__: one per appended entry.
_offset = functools.partial(tuple.__new__, LogOffset)
_encode = msgspec.json.Encoder().encode


class ShapeState(enum.Enum):
    SNAPSHOTTING = "snapshotting"
    LIVE = "live"
    GONE = "gone"
    FAILED = "failed"


class ShapeGone(Exception):
    """The shape was invalidated, deleted or evicted: clients get 409 must-refetch."""

    def __init__(self, handle: str, reason: str) -> None:
        super().__init__(f"shape {handle} is gone: {reason}")
        self.handle = handle
        self.reason = reason


SNAPSHOTTING = ShapeState.SNAPSHOTTING
LIVE = ShapeState.LIVE
GONE = ShapeState.GONE
FAILED = ShapeState.FAILED


class ShapeConsumer:
    __slots__ = (
        "handle",
        "shape",
        "log",
        "state",
        "snapshot",
        "error",
        "reason",
        "recorded",
        "last_used",
        "last_lsn",
        "converter",
        "relation",
        "waiting",
        "waited",
        "_pending",
        "_filtering",
        "subquery",
        "__weakref__",
    )

    def __init__(
        self, handle: str, shape: Shape, log: ShapeLog, snapshot: SnapshotInfo | None = None
    ) -> None:
        self.handle = handle
        self.shape = shape
        self.log = log
        self.snapshot = snapshot
        """What the initial snapshot saw (None while it runs)."""
        self.state = SNAPSHOTTING if snapshot is None else LIVE
        self.recorded = snapshot is not None
        """In the registry on disk: a recovered shape is, a new one once its snapshot is."""
        self.error: BaseException | None = None
        """Why the snapshot failed (FAILED)."""
        self.reason = ""
        """Why the shape is GONE."""
        self.last_used = time.monotonic()
        self.last_lsn = log.last_tx
        """Commit LSN of the last transaction stored for the shape (log or buffer)."""
        self.converter: Converter | None = None
        self.relation: Relation | None = None
        """The relation layout ``converter`` was built for."""
        self.waiting = 0
        """Requests waiting on the shape now."""
        self.waited = False
        """A request ever waited on it (a shape made in-process may have none)."""
        self._pending: list[tuple[int, int, Encoded]] = []
        self._filtering = True
        self.subquery: SubqueryShape | None = None
        """For a shape with ``IN (SELECT ...)``: its views and moves (it buffers changes
        itself, unconverted, while its snapshot or a move-in query runs)."""

    def __repr__(self) -> str:
        return f"<ShapeConsumer {self.handle} {self.shape.definition.table} {self.state.value}>"

    @property
    def definition(self) -> ShapeDefinition:
        return self.shape.definition

    @property
    def gone(self) -> bool:
        return self.state is GONE

    # -- ingest ----------------------------------------------------------------------

    def accepts(self, xid: int, commit_lsn: int) -> bool:
        """Is this transaction new to the shape: in neither its snapshot nor its log?"""
        if commit_lsn <= self.last_lsn:
            return False
        info = self.snapshot
        if info is None or not (self._filtering or commit_lsn < info.lsn):
            return True  # the common case, inline: called per shape per transaction
        new, self._filtering = after_snapshot(info, xid, commit_lsn, self._filtering)
        return new

    def rebind(self, relation: Relation) -> Converter:
        """The converter for changes in ``relation``'s column layout.

        Raises KeyError/ValueError when the layout lacks a column the shape needs."""
        if (
            self.converter is not None
            and self.relation is not None
            and relation.column_names == self.relation.column_names
        ):
            # Another relation, the same layout (partitions of one table take turns):
            # the converter depends on nothing else.
            self.relation = relation
            return self.converter
        if self.subquery is not None:
            self.converter = self.subquery.converter(relation.column_names)
        else:
            self.converter = ShapeConverter(self.shape, relation.column_names)
        self.relation = relation
        return self.converter

    def append(self, xid: int, commit_lsn: int, entries: Encoded) -> None:
        """Store one transaction's entries: buffered while snapshotting, else in the log
        (raises StorageError, leaving the log and ``last_lsn`` as they were).
        ``commit_lsn`` 0: frames of no transaction (a subquery shape's move)."""
        if self.snapshot is None:
            self._pending.append((xid, commit_lsn, entries))
        else:
            self.log.append_changes(entries)
            self.log.notify()
        if commit_lsn > self.last_lsn:  # a subquery shape's held transaction is behind it
            self.last_lsn = commit_lsn

    def storage_rolled_back(self) -> None:
        """The log lost frames that were not durable: they will be replayed."""
        self.last_lsn = max(self.log.last_tx, self._pending[-1][1] if self._pending else 0)

    # -- snapshot --------------------------------------------------------------------

    def snapshot_taken(self, info: SnapshotInfo) -> None:
        """The snapshot is in the log: append what was buffered that it did not see."""
        pending, self._pending = self._pending, []
        self.snapshot = info
        self.last_lsn = self.log.last_tx
        for xid, commit_lsn, entries in pending:
            if self.accepts(xid, commit_lsn):
                self.log.append_changes(entries)
                self.last_lsn = commit_lsn
        self.state = LIVE
        self.log.notify()

    def snapshot_taken_held(self, filtering: bool) -> None:
        """A subquery shape's snapshot is in the log (and what it buffered after it)."""
        self._filtering = filtering
        self.state = LIVE
        self.log.notify()

    def fail(self, error: BaseException) -> None:
        if self.state is SNAPSHOTTING:
            self.state = FAILED
            self.error = error
            self._pending = []
            self.log.notify()

    def invalidate(self, reason: str) -> bool:
        """GONE from now on (a FAILED shape keeps its error); False if it already was."""
        if self.state is GONE or self.state is FAILED:
            return False
        self.state = GONE
        self.reason = reason
        self._pending = []
        self.log.notify()
        return True

    # -- serving ---------------------------------------------------------------------

    @property
    def snapshot_done(self) -> bool:
        return self.log.snapshot_done

    @property
    def last_offset(self) -> LogOffset:
        return self.log.last_offset

    def read(
        self, after: LogOffset, max_bytes: int | None = None
    ) -> tuple[list[bytes], LogOffset, bool]:
        """Entries after ``after`` (see ``ShapeLog.read``); ShapeGone once the shape is
        gone (its log is deleted)."""
        if self.state is GONE:
            raise ShapeGone(self.handle, self.reason)
        return self.log.read(after, max_bytes)

    def slice(self, after: LogOffset, max_bytes: int | None = None) -> LogSlice:
        """``read`` as positions in storage (see ``ShapeLog.slice``)."""
        if self.state is GONE:
            raise ShapeGone(self.handle, self.reason)
        return self.log.slice(after, max_bytes)

    def has_after(self, offset: LogOffset) -> bool:
        return self.log.has_after(offset)

    def check(self) -> None:
        """Raise why the shape cannot be served: ShapeGone, or the snapshot's error."""
        if self.state is GONE:
            raise ShapeGone(self.handle, self.reason)
        if self.state is FAILED:
            assert self.error is not None
            raise self.error

    async def wait(
        self,
        after: LogOffset | None,
        timeout: float,
        *,
        until_snapshot: bool = False,
        wake: Sequence[asyncio.Future[None]] = (),
    ) -> bool:
        """Wait until the log has entries after ``after`` (or, with ``until_snapshot``,
        the snapshot is complete); False on timeout or when a ``wake`` future is done.

        Raises ShapeGone or the snapshot's error as soon as the shape has them."""
        deadline = time.monotonic() + timeout
        log = self.log
        self.waiting += 1
        self.waited = True
        try:
            while True:
                self.check()
                if after is not None and log.has_after(after):
                    return True
                if until_snapshot and log.snapshot_done:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or any(f.done() for f in wake):
                    return False
                grown = log.waiter()
                try:
                    await asyncio.wait(
                        [grown, *wake], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    log.unwait(grown)
        finally:
            self.waiting -= 1


class Shared:
    """Entries of a transaction that several shapes got (one conversion of a change for
    shapes with the same projection and match): each encoded once, and once more with
    ``"last": true`` for the shapes whose last entry of the transaction it is."""

    __slots__ = ("plain", "last")

    def __init__(self) -> None:
        self.plain: dict[int, bytes] = {}
        self.last: dict[int, bytes] = {}


class Appender:
    """The one way a transaction's entries reach a shape (``transaction``), and the
    consumers appended to since the flush tracker last took them (``take``)."""

    __slots__ = ("dirty",)

    def __init__(self) -> None:
        self.dirty: set[ShapeConsumer] = set()

    def transaction(
        self,
        consumer: ShapeConsumer,
        xid: int,
        commit_lsn: int,
        entries: list[Entry],
        shared: Shared | None = None,
    ) -> Encoded:
        """``consumer``'s entries of one transaction (at least one), encoded at their op
        positions, the last with ``"last": true``, appended (its readers are woken) and
        marked for the flush tracker; the frames are returned. Without ``shared`` the
        entries are the shape's own (the last is marked in place); with it, they are
        left as they are for the other shapes."""
        if shared is None:
            final = entries[-1]
            headers = final["headers"]
            headers["last"] = True
            if len(entries) == 1:  # most transactions: no comprehension to set up
                frames = [(_offset((commit_lsn, headers["op_position"])), _encode(final))]
            else:
                frames = [
                    (_offset((commit_lsn, entry["headers"]["op_position"])), _encode(entry))
                    for entry in entries
                ]
        else:
            plain = shared.plain
            frames = []
            last = len(entries) - 1
            for i in range(last):
                entry = entries[i]
                payload = plain.get(id(entry))
                if payload is None:
                    payload = plain[id(entry)] = _encode(entry)
                frames.append((_offset((commit_lsn, entry["headers"]["op_position"])), payload))
            entry = entries[last]
            payload = shared.last.get(id(entry))
            if payload is None:
                marked = {**entry, "headers": {**entry["headers"], "last": True}}
                payload = shared.last[id(entry)] = _encode(marked)
            frames.append((_offset((commit_lsn, entry["headers"]["op_position"])), payload))
        consumer.append(xid, commit_lsn, frames)
        self.dirty.add(consumer)
        return frames

    def after_log(self, consumer: ShapeConsumer, tx: int, payloads: list[bytes]) -> None:
        """Entries of no transaction (a subquery shape's move events and rows) after the
        log's last one, at the position of transaction ``tx``."""
        tx = max(tx, 1)  # never a snapshot offset (0_n)
        last = consumer.log.last_offset
        op = last.op + 1 if last.tx == tx else 0
        if last.tx > tx:
            tx, op = last.tx, last.op + 1
        frames = [(LogOffset(tx, op + i), payload) for i, payload in enumerate(payloads)]
        consumer.append(0, 0, frames)
        self.dirty.add(consumer)

    def take(self) -> set[ShapeConsumer]:
        """The consumers appended to since the last call (the flush tracker's round)."""
        dirty, self.dirty = self.dirty, set()
        return dirty
