"""The messages of a shape log, as typed structs (Electric's wire format, §5 of the protocol).

A response body is a JSON array of messages of three kinds, told apart by their headers:
a change (``key``, ``value``, ``headers.operation``), a control (``headers.control``:
``up-to-date``, ``must-refetch``, ``snapshot-end``, ``subset-end``) or an event of a subquery
shape (``headers.event``: ``move-in`` / ``move-out`` with ``patterns``).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from pysync.client.values import Parser, parse_row


class Headers(msgspec.Struct, frozen=True, omit_defaults=True):
    """A change message's headers. Snapshot rows carry only ``operation`` and ``relation``;
    replicated changes add ``lsn``, ``op_position``, ``txids`` and (on the shape's last
    change of a transaction) ``last``. ``tags``, ``removed_tags`` and ``active_conditions``
    come with shapes whose WHERE has a subquery."""

    operation: str = ""
    relation: tuple[str, str] | None = None
    lsn: str | None = None
    op_position: int | None = None
    txids: tuple[int, ...] = ()
    last: bool = False
    key_change_to: str | None = None
    key_change_from: str | None = None
    tags: tuple[str, ...] | None = None
    removed_tags: tuple[str, ...] | None = None
    active_conditions: tuple[bool, ...] | None = None
    snapshot_mark: int | None = None


class ChangeMessage(msgspec.Struct):
    """An insert, update or delete of the row ``key``. ``value`` holds parsed values: the
    full row for inserts, the key plus changed columns for updates (``replica=default``),
    the key columns for deletes. ``old_value`` (``replica=full`` updates) holds the old
    values of the changed columns."""

    key: str
    value: dict[str, Any]
    headers: Headers
    old_value: dict[str, Any] | None = None

    @property
    def operation(self) -> str:
        return self.headers.operation

    @property
    def offset(self) -> str | None:
        """This change's log offset (replicated changes only)."""
        h = self.headers
        return None if h.lsn is None or h.op_position is None else f"{h.lsn}_{h.op_position}"


class ControlMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """``up-to-date`` (the log's end was reached), ``must-refetch`` (the shape was reset:
    drop its rows), ``snapshot-end`` (with the snapshot's ``xmin``/``xmax``/``xip_list``)."""

    control: str
    global_last_seen_lsn: str | None = None
    xmin: str | None = None
    xmax: str | None = None
    xip_list: tuple[str, ...] = ()


class MovePattern(msgspec.Struct, frozen=True):
    pos: int
    value: str


class EventMessage(msgspec.Struct, frozen=True):
    """``move-in`` / ``move-out`` of rows of a subquery shape, matched by tag ``patterns``."""

    event: str
    patterns: tuple[MovePattern, ...] = ()
    txids: tuple[int, ...] = ()


Message = ChangeMessage | ControlMessage | EventMessage

UP_TO_DATE = "up-to-date"
MUST_REFETCH = "must-refetch"


class _WireHeaders(Headers, frozen=True):
    control: str | None = None
    event: str | None = None
    global_last_seen_lsn: str | None = None
    xmin: str | None = None
    xmax: str | None = None
    xip_list: tuple[str, ...] = ()
    patterns: tuple[MovePattern, ...] = ()


class _Wire(msgspec.Struct):
    headers: _WireHeaders = _WireHeaders()
    key: str | None = None
    value: dict[str, Any] | None = None
    old_value: dict[str, Any] | None = None


_batch = msgspec.json.Decoder(list[_Wire])
_single = msgspec.json.Decoder(_Wire)


def decode_batch(body: bytes, parsers: dict[str, Parser]) -> list[Message]:
    """The messages of a JSON array body (empty body = no messages)."""
    if not body.strip():
        return []
    try:
        wires = _batch.decode(body)
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    return [_typed(wire, parsers) for wire in wires]


def decode_one(data: bytes | str, parsers: dict[str, Parser]) -> Message:
    """One message (an SSE event's data)."""
    try:
        wire = _single.decode(data)
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    return _typed(wire, parsers)


_XID = re.compile(r"[0-9]{1,20}\Z")
"""A 64-bit transaction id (xid8) in decimal."""
_TOO_DEEP = "JSON nested deeper than Python decodes (values are strings in a shape log)"


def _typed(wire: _Wire, parsers: dict[str, Parser]) -> Message:
    h = wire.headers
    if h.control is not None:
        for xid in (h.xmin, h.xmax, *h.xip_list):
            if xid is not None and not _XID.match(xid):  # wait_for_txid reads them as numbers
                raise ValueError(f"a {h.control} whose xmin/xmax/xip_list has {xid[:40]!r}")
        return ControlMessage(h.control, h.global_last_seen_lsn, h.xmin, h.xmax, h.xip_list)
    if h.event is not None:
        return EventMessage(h.event, h.patterns, h.txids)
    if wire.key is None or not h.operation:
        raise ValueError("a message that is neither a change, a control nor an event")
    headers = Headers(
        h.operation,
        h.relation,
        h.lsn,
        h.op_position,
        h.txids,
        h.last,
        h.key_change_to,
        h.key_change_from,
        h.tags,
        h.removed_tags,
        h.active_conditions,
        h.snapshot_mark,
    )
    value = parse_row(wire.value or {}, parsers)
    old = parse_row(wire.old_value, parsers) if wire.old_value is not None else None
    return ChangeMessage(wire.key, value, headers, old)
