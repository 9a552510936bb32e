"""Assemble pgoutput messages into committed transactions.

Begin..Commit (protocol 1), streamed chunks ending in Stream Commit (protocol 2) and
prepared transactions ending in Commit Prepared (protocol 3) all become one
``Transaction``. Aborted streamed (sub)transactions and rolled-back prepared ones are
dropped. A relation cache is kept from Relation messages, and each one is also handed
on, in stream order, as a ``RelationChange``: consumers check schema changes before the
transaction that carries them is complete.
"""

from __future__ import annotations

import msgspec

from pysync.postgres import pgoutput as pg
from pysync.postgres.pgoutput import UNCHANGED_TOAST, Relation, TupleData


class Change(msgspec.Struct, frozen=True, gc=False):
    """An inserted, updated or deleted row, values in Postgres text format."""

    op: str
    """``insert``, ``update`` or ``delete``."""
    relation: Relation
    new: TupleData | None
    """The new row (insert, update); None for a delete."""
    old: TupleData | None
    """The old row (``REPLICA IDENTITY FULL``) or old key columns, when pgoutput sent one;
    the values it did not send are UNCHANGED_TOAST."""


class Truncation(msgspec.Struct, frozen=True, gc=False):
    relations: tuple[Relation, ...]
    options: int


class Transaction(msgspec.Struct, gc=False):
    xid: int
    commit_lsn: int
    end_lsn: int
    commit_time: int
    """Microseconds since 2000-01-01 UTC, as Postgres sends it."""
    changes: list[Change | Truncation]
    messages: list[pg.Message]
    """Transactional logical decoding messages, in order."""
    origin: str | None = None


class RelationChange(msgspec.Struct, frozen=True, gc=False):
    """A Relation message: the table's current name and columns, and what was known
    before (None the first time this session sees the table)."""

    relation: Relation
    previous: Relation | None


class AssemblyError(RuntimeError):
    """The message sequence broke the protocol (e.g. a change for an unknown relation)."""


def _fill_toast(new: TupleData, old: TupleData | None) -> TupleData:
    """Replace unchanged-TOAST markers with the old row's values when we have them."""
    if old is None:
        return new
    return tuple(
        old[i] if value is UNCHANGED_TOAST and old[i] is not UNCHANGED_TOAST else value
        for i, value in enumerate(new)
    )


def _key_only(old: TupleData, relation: Relation) -> TupleData:
    """An old tuple of the replica identity's columns (``K``): pgoutput sends NULL for
    the others, which were not sent at all; they become UNCHANGED_TOAST (not sent)."""
    return tuple(
        value if column.flags & 1 else UNCHANGED_TOAST
        for value, column in zip(old, relation.columns, strict=True)
    )


def _row_change(msg: pg.Insert | pg.Update | pg.Delete, relation: Relation) -> Change:
    if type(msg) is pg.Insert:
        return Change("insert", relation, msg.new, None)
    old = msg.old
    if old is not None and msg.old_kind == "K":
        old = _key_only(old, relation)
    if type(msg) is pg.Update:
        new = msg.new
        if UNCHANGED_TOAST in new:
            new = _fill_toast(new, old)
        return Change("update", relation, new, old)
    return Change("delete", relation, None, old)


class TransactionAssembler:
    """Feed decoded messages in stream order; ``feed`` returns completed transactions.

    ``feed`` returns a Transaction when one commits, a RelationChange or a
    non-transactional logical Message as soon as it arrives, and None otherwise.
    """

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self.types: dict[int, pg.Type] = {}
        self._current: Transaction | None = None
        # Streamed (protocol 2) transactions: top xid -> [(subxid, change or message)].
        self._streams: dict[int, list[tuple[int, Change | Truncation | pg.Message]]] = {}
        self._stream_xid: int | None = None
        # Prepared (two-phase) transactions waiting for COMMIT/ROLLBACK PREPARED, by gid.
        self.prepared: dict[str, Transaction] = {}

    @property
    def in_transaction(self) -> bool:
        """True while a transaction, a streamed one or a prepared one is still open."""
        return self._current is not None or bool(self._streams) or bool(self.prepared)

    def reset(self) -> None:
        """Forget partial transactions (after a reconnect Postgres sends them again)."""
        self._current = None
        self._streams.clear()
        self._stream_xid = None
        self.prepared.clear()

    def feed(self, msg: pg.PgOutputMessage) -> Transaction | pg.Message | RelationChange | None:
        # type(msg) is X, not isinstance: a message class's metaclass (msgspec's) makes
        # every isinstance that fails a slow call. The classes are final, so mypy narrows
        # on it both ways.
        # The hot path, inlined: row changes of a plain (not streamed) transaction.
        if (
            type(msg) is pg.Insert or type(msg) is pg.Update or type(msg) is pg.Delete
        ) and self._stream_xid is None:
            current = self._current
            known = self.relations.get(msg.relation_oid)
            if current is None or known is None:
                self._add(self._change(msg), msg.xid)
                return None
            current.changes.append(_row_change(msg, known))
            return None
        if (
            type(msg) is pg.Insert
            or type(msg) is pg.Update
            or type(msg) is pg.Delete
            or type(msg) is pg.Truncate
        ):
            self._add(self._change(msg), msg.xid)
            return None
        if type(msg) is pg.Begin:
            self._current = Transaction(msg.xid, msg.final_lsn, 0, msg.commit_time, [], [])
            return None
        if type(msg) is pg.Commit:
            txn = self._take_current("Commit")
            txn.commit_lsn = msg.commit_lsn
            txn.end_lsn = msg.end_lsn
            txn.commit_time = msg.commit_time
            return txn
        if type(msg) is pg.Relation:
            previous = self.relations.get(msg.oid)
            self.relations[msg.oid] = msg
            return RelationChange(msg, previous)
        if type(msg) is pg.Message:
            if not msg.transactional:
                return msg
            self._add(msg, msg.xid)
            return None
        return self._feed_rare(msg)

    def _feed_rare(self, msg: pg.PgOutputMessage) -> Transaction | None:
        if isinstance(msg, pg.Type):
            self.types[msg.oid] = msg
        elif isinstance(msg, pg.Origin):
            if self._current is not None:
                self._current.origin = msg.name
        elif isinstance(msg, pg.StreamStart):
            self._stream_xid = msg.xid
            self._streams.setdefault(msg.xid, [])
        elif isinstance(msg, pg.StreamStop):
            self._stream_xid = None
        elif isinstance(msg, pg.StreamAbort):
            if msg.xid == msg.subxid:
                self._streams.pop(msg.xid, None)
            elif msg.xid in self._streams:
                self._streams[msg.xid] = [e for e in self._streams[msg.xid] if e[0] != msg.subxid]
        elif isinstance(msg, pg.StreamCommit):
            return self._from_stream(msg.xid, msg.commit_lsn, msg.end_lsn, msg.commit_time)
        elif isinstance(msg, pg.BeginPrepare):
            self._current = Transaction(
                msg.xid, msg.prepare_lsn, msg.end_lsn, msg.prepare_time, [], []
            )
        elif isinstance(msg, pg.Prepare):
            self.prepared[msg.gid] = self._take_current("Prepare")
        elif isinstance(msg, pg.StreamPrepare):
            txn = self._from_stream(msg.xid, msg.prepare_lsn, msg.end_lsn, msg.prepare_time)
            self.prepared[msg.gid] = txn
        elif isinstance(msg, pg.CommitPrepared):
            prepared = self.prepared.pop(msg.gid, None)
            if prepared is None:
                # Prepared before the slot's two_phase_at point: Postgres sends the whole
                # transaction as Begin..Commit instead, so there is nothing to release here.
                return None
            prepared.commit_lsn = msg.commit_lsn
            prepared.end_lsn = msg.end_lsn
            prepared.commit_time = msg.commit_time
            return prepared
        elif isinstance(msg, pg.RollbackPrepared):
            self.prepared.pop(msg.gid, None)
        return None

    def _change(self, msg: pg.Insert | pg.Update | pg.Delete | pg.Truncate) -> Change | Truncation:
        relations = self.relations
        if type(msg) is pg.Truncate:
            return Truncation(tuple(self._relation(oid) for oid in msg.relation_oids), msg.options)
        relation = relations.get(msg.relation_oid)
        if relation is None:
            relation = self._relation(msg.relation_oid)
        return _row_change(msg, relation)

    def _relation(self, oid: int) -> Relation:
        try:
            return self.relations[oid]
        except KeyError:
            raise AssemblyError(f"change for relation {oid} before its Relation message") from None

    def _add(self, item: Change | Truncation | pg.Message, xid: int | None) -> None:
        if self._stream_xid is not None:
            self._streams[self._stream_xid].append(
                (xid if xid is not None else self._stream_xid, item)
            )
            return
        current = self._current
        if current is None:
            raise AssemblyError("row change outside of a transaction")
        if type(item) is pg.Message:
            current.messages.append(item)
        else:
            current.changes.append(item)

    def _take_current(self, what: str) -> Transaction:
        txn = self._current
        if txn is None:
            raise AssemblyError(f"{what} without Begin")
        self._current = None
        return txn

    def _from_stream(
        self, xid: int, commit_lsn: int, end_lsn: int, commit_time: int
    ) -> Transaction:
        entries = self._streams.pop(xid, [])
        changes: list[Change | Truncation] = []
        messages: list[pg.Message] = []
        for _, item in entries:
            if type(item) is pg.Message:
                messages.append(item)
            else:
                changes.append(item)
        return Transaction(xid, commit_lsn, end_lsn, commit_time, changes, messages)
