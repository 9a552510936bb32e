"""Decoder for the ``pgoutput`` logical replication protocol, versions 1 to 4.

Every message becomes a msgspec Struct. Tuple values stay as Postgres sees them: text
(``str``), binary (``bytes``), SQL NULL (``None``) or the ``UNCHANGED_TOAST`` marker.
Reference: the "Logical Replication Message Formats" chapter of the Postgres docs.
"""

from __future__ import annotations

from struct import Struct
from struct import error as StructError
from typing import ClassVar, Final, final

import msgspec

from pysync.postgres.lsn import format_lsn


class _UnchangedToast:
    """An unchanged TOASTed value: pgoutput omits it, the old row (if any) has it."""

    _instance: ClassVar[_UnchangedToast | None] = None

    def __new__(cls) -> _UnchangedToast:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    def __reduce__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Final = _UnchangedToast()

Value = str | bytes | None | _UnchangedToast
TupleData = tuple[Value, ...]


class DecodeError(ValueError):
    """Bytes that are not a pgoutput message we understand."""


# -- messages -------------------------------------------------------------------------
# Final: postgres/transactions.py dispatches on ``type(msg) is X`` (isinstance is slow on
# msgspec's metaclass), which mypy narrows for final classes only.

_S = dict(frozen=True, gc=False)


@final
class Begin(msgspec.Struct, **_S):
    final_lsn: int
    commit_time: int
    xid: int


@final
class Commit(msgspec.Struct, **_S):
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


@final
class Origin(msgspec.Struct, **_S):
    commit_lsn: int
    name: str


class RelationColumn(msgspec.Struct, **_S):
    flags: int
    """Bit 1: part of the replica identity (every column under REPLICA IDENTITY FULL)."""
    name: str
    type_oid: int
    type_mod: int


@final
class Relation(msgspec.Struct, gc=False):
    xid: int | None
    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[RelationColumn, ...]
    column_names: tuple[str, ...] = ()
    """Filled from ``columns``: the routing hot path reads it for every change."""
    ancestors: tuple[tuple[str, str], ...] = ()
    """Not in the message: the partitioned tables above this one (a partition), as
    ``(schema, name)``, nearest first, when pysync looked them up in the catalog
    (pgoutput reports a partition's changes under the partition's own name)."""

    def __post_init__(self) -> None:
        if not self.column_names:
            self.column_names = tuple(c.name for c in self.columns)


@final
class Type(msgspec.Struct, **_S):
    xid: int | None
    oid: int
    namespace: str
    name: str


@final
class Insert(msgspec.Struct, **_S):
    xid: int | None
    relation_oid: int
    new: TupleData


@final
class Update(msgspec.Struct, **_S):
    xid: int | None
    relation_oid: int
    old_kind: str | None
    """``K`` (old key columns), ``O`` (old row, replica identity full) or None."""
    old: TupleData | None
    new: TupleData


@final
class Delete(msgspec.Struct, **_S):
    xid: int | None
    relation_oid: int
    old_kind: str
    old: TupleData


@final
class Truncate(msgspec.Struct, **_S):
    xid: int | None
    options: int
    """Bit 1: CASCADE, bit 2: RESTART IDENTITY."""
    relation_oids: tuple[int, ...]

    @property
    def cascade(self) -> bool:
        return bool(self.options & 1)

    @property
    def restart_identity(self) -> bool:
        return bool(self.options & 2)


@final
class Message(msgspec.Struct, **_S):
    """A logical decoding message from ``pg_logical_emit_message``."""

    xid: int | None
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@final
class StreamStart(msgspec.Struct, **_S):
    xid: int
    first_segment: bool


@final
class StreamStop(msgspec.Struct, **_S):
    pass


@final
class StreamCommit(msgspec.Struct, **_S):
    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


@final
class StreamAbort(msgspec.Struct, **_S):
    xid: int
    subxid: int
    abort_lsn: int | None = None
    abort_time: int | None = None


@final
class BeginPrepare(msgspec.Struct, **_S):
    prepare_lsn: int
    end_lsn: int
    prepare_time: int
    xid: int
    gid: str


@final
class Prepare(msgspec.Struct, **_S):
    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_time: int
    xid: int
    gid: str


@final
class CommitPrepared(msgspec.Struct, **_S):
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int
    xid: int
    gid: str


@final
class RollbackPrepared(msgspec.Struct, **_S):
    flags: int
    prepare_end_lsn: int
    rollback_end_lsn: int
    prepare_time: int
    rollback_time: int
    xid: int
    gid: str


@final
class StreamPrepare(msgspec.Struct, **_S):
    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_time: int
    xid: int
    gid: str


PgOutputMessage = (
    Begin
    | Commit
    | Origin
    | Relation
    | Type
    | Insert
    | Update
    | Delete
    | Truncate
    | Message
    | StreamStart
    | StreamStop
    | StreamCommit
    | StreamAbort
    | BeginPrepare
    | Prepare
    | CommitPrepared
    | RollbackPrepared
    | StreamPrepare
)

# -- decoding -------------------------------------------------------------------------

_i16 = Struct(">h").unpack_from
_u32 = Struct(">I").unpack_from
_u64 = Struct(">Q").unpack_from
_begin = Struct(">QqI").unpack_from
_commit = Struct(">BQQq").unpack_from
_prepare = Struct(">BQQqI").unpack_from
_begin_prepare = Struct(">QQqI").unpack_from
_rollback_prepared = Struct(">BQQqqI").unpack_from
_stream_commit = Struct(">IBQQq").unpack_from
_column_tail = Struct(">Ii").unpack_from
_abort_tail = Struct(">Qq").unpack_from


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


def decode_tuple(buf: bytes, pos: int) -> tuple[TupleData, int]:
    """TupleData at ``pos``: its values and the position after it."""
    (count,) = _i16(buf, pos)
    pos += 2
    values: list[Value] = []
    append = values.append
    for _ in range(count):
        kind = buf[pos]
        pos += 1
        if kind == 116:  # 't'
            (length,) = _u32(buf, pos)
            pos += 4
            end = pos + length
            append(buf[pos:end].decode())
            pos = end
        elif kind == 110:  # 'n'
            append(None)
        elif kind == 117:  # 'u'
            append(UNCHANGED_TOAST)
        elif kind == 98:  # 'b'
            (length,) = _u32(buf, pos)
            pos += 4
            end = pos + length
            append(bytes(buf[pos:end]))
            pos = end
        else:
            raise DecodeError(f"unknown tuple value kind {chr(kind)!r} (byte {kind})")
    return tuple(values), pos


class Decoder:
    """Turns pgoutput payloads into messages.

    Stateful only in one respect: between Stream Start and Stream Stop, DML, Relation,
    Type and Message messages carry the xid of their (sub)transaction.
    """

    def __init__(self, protocol_version: int = 1, *, parallel_streaming: bool = False) -> None:
        if protocol_version not in (1, 2, 3, 4):
            raise ValueError(f"pgoutput protocol version must be 1-4, not {protocol_version}")
        self.protocol_version = protocol_version
        # Stream Abort carries the abort LSN and time only with streaming = parallel.
        self._abort_has_lsn = parallel_streaming and protocol_version >= 4
        self.in_stream = False

    def decode(self, buf: bytes, lsn: int = 0) -> PgOutputMessage:
        """Decode one message; ``lsn`` (the XLogData start) is only used in errors."""
        try:
            return self.decode_unlocated(buf)
        except DecodeError as exc:
            raise DecodeError(f"{exc} at LSN {format_lsn(lsn)}") from None

    def decode_unlocated(self, buf: bytes) -> PgOutputMessage:
        """``decode`` for the hot loop: errors lack the LSN, which the caller adds."""
        try:
            return self._decode(buf)
        except DecodeError:
            raise
        except (IndexError, ValueError, StructError) as exc:
            kind = chr(buf[0]) if buf else "?"
            raise DecodeError(f"malformed pgoutput message {kind!r}: {exc}") from None

    def _xid(self, buf: bytes) -> tuple[int | None, int]:
        if self.in_stream:
            return _u32(buf, 1)[0], 5
        return None, 1

    def _decode(self, buf: bytes) -> PgOutputMessage:
        kind = buf[0]
        if kind == 73:  # 'I'
            xid, pos = self._xid(buf)
            (oid,) = _u32(buf, pos)
            new, _ = decode_tuple(buf, pos + 5)  # skip 'N'
            return Insert(xid, oid, new)
        if kind == 85:  # 'U'
            xid, pos = self._xid(buf)
            (oid,) = _u32(buf, pos)
            pos += 4
            old_kind: str | None = None
            old: TupleData | None = None
            marker = buf[pos]
            if marker == 75 or marker == 79:  # 'K' / 'O'
                old_kind = chr(marker)
                old, pos = decode_tuple(buf, pos + 1)
                marker = buf[pos]
            if marker != 78:  # 'N'
                raise DecodeError(f"update without a new tuple (byte {marker})")
            new, _ = decode_tuple(buf, pos + 1)
            return Update(xid, oid, old_kind, old, new)
        if kind == 68:  # 'D'
            xid, pos = self._xid(buf)
            (oid,) = _u32(buf, pos)
            old, _ = decode_tuple(buf, pos + 5)
            return Delete(xid, oid, chr(buf[pos + 4]), old)
        if kind == 66:  # 'B'
            final_lsn, commit_time, xid = _begin(buf, 1)
            return Begin(final_lsn, commit_time, xid)
        if kind == 67:  # 'C'
            flags, commit_lsn, end_lsn, commit_time = _commit(buf, 1)
            return Commit(flags, commit_lsn, end_lsn, commit_time)
        if kind == 82:  # 'R'
            xid, pos = self._xid(buf)
            (oid,) = _u32(buf, pos)
            namespace, pos = _cstring(buf, pos + 4)
            name, pos = _cstring(buf, pos)
            replica_identity = chr(buf[pos])
            (ncols,) = _i16(buf, pos + 1)
            pos += 3
            columns = []
            for _ in range(ncols):
                flags = buf[pos]
                col_name, pos = _cstring(buf, pos + 1)
                type_oid, type_mod = _column_tail(buf, pos)
                pos += 8
                columns.append(RelationColumn(flags, col_name, type_oid, type_mod))
            return Relation(xid, oid, namespace, name, replica_identity, tuple(columns))
        if kind == 89:  # 'Y'
            xid, pos = self._xid(buf)
            (oid,) = _u32(buf, pos)
            namespace, pos = _cstring(buf, pos + 4)
            name, pos = _cstring(buf, pos)
            return Type(xid, oid, namespace, name)
        if kind == 84:  # 'T'
            xid, pos = self._xid(buf)
            (count,) = _u32(buf, pos)
            options = buf[pos + 4]
            pos += 5
            oids = tuple(_u32(buf, pos + 4 * i)[0] for i in range(count))
            return Truncate(xid, options, oids)
        if kind == 79:  # 'O'
            (commit_lsn,) = _u64(buf, 1)
            name, _ = _cstring(buf, 9)
            return Origin(commit_lsn, name)
        if kind == 77:  # 'M'
            xid, pos = self._xid(buf)
            flags = buf[pos]
            (msg_lsn,) = _u64(buf, pos + 1)
            prefix, pos = _cstring(buf, pos + 9)
            (length,) = _u32(buf, pos)
            content = bytes(buf[pos + 4 : pos + 4 + length])
            return Message(xid, bool(flags & 1), msg_lsn, prefix, content)
        if kind == 83:  # 'S'
            self.in_stream = True
            (xid,) = _u32(buf, 1)
            return StreamStart(xid, buf[5] == 1)
        if kind == 69:  # 'E'
            self.in_stream = False
            return StreamStop()
        if kind == 99:  # 'c'
            xid, flags, commit_lsn, end_lsn, commit_time = _stream_commit(buf, 1)
            return StreamCommit(xid, flags, commit_lsn, end_lsn, commit_time)
        if kind == 65:  # 'A'
            xid, subxid = _u32(buf, 1)[0], _u32(buf, 5)[0]
            if self._abort_has_lsn and len(buf) >= 25:
                abort_lsn, abort_time = _abort_tail(buf, 9)
                return StreamAbort(xid, subxid, abort_lsn, abort_time)
            return StreamAbort(xid, subxid)
        if kind == 98:  # 'b'
            prepare_lsn, end_lsn, prepare_time, xid = _begin_prepare(buf, 1)
            gid, _ = _cstring(buf, 29)
            return BeginPrepare(prepare_lsn, end_lsn, prepare_time, xid, gid)
        if kind == 80 or kind == 75 or kind == 112:  # 'P', 'K', 'p'
            flags, lsn1, lsn2, time1, xid = _prepare(buf, 1)
            gid, _ = _cstring(buf, 30)
            if kind == 80:
                return Prepare(flags, lsn1, lsn2, time1, xid, gid)
            if kind == 75:
                return CommitPrepared(flags, lsn1, lsn2, time1, xid, gid)
            return StreamPrepare(flags, lsn1, lsn2, time1, xid, gid)
        if kind == 114:  # 'r'
            flags, prep_end, rb_end, prep_time, rb_time, xid = _rollback_prepared(buf, 1)
            gid, _ = _cstring(buf, 38)
            return RollbackPrepared(flags, prep_end, rb_end, prep_time, rb_time, xid, gid)
        raise DecodeError(f"unknown pgoutput message type {chr(kind)!r} (byte {kind})")
