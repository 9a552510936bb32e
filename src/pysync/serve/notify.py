"""The channel between the replicating process and its HTTP workers: msgspec messages
over a UNIX stream socket, each framed by its length.

Worker -> hub: ``Ask`` (the shape for a definition, made if asked to), ``Delete``,
``Dropped`` (a ``Gone`` is done with), ``Subset`` (of a shape with subqueries, whose
values only the hub has), ``Ready``. Hub -> worker: ``Found``, ``Deleted`` and
``SubsetDone`` (replies), ``Gone`` (a shape left the registry: deleted, invalidated,
evicted), ``Grown`` (a shape's log has new frames, or the shape changed state) and
``Status`` (the engine's health, the last LSN seen). Messages on one connection arrive
in order, so a worker that got the reply for a shape then gets every later
announcement for it.

A deletion or invalidation is acknowledged (``Deleted``, or the ``Found`` of a shape
made in its place) only once every worker answered its ``Gone`` with ``Dropped``: no
worker serves the old handle to a request made after that.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgspec

from pysync.postgres.catalog import Table
from pysync.postgres.snapshot import SnapshotInfo
from pysync.shapes.definition import ShapeDefinition

_LENGTH = struct.Struct(">I")


class Ask(msgspec.Struct, tag="ask"):
    id: int
    definition: ShapeDefinition
    create: bool
    verify: bool = False


class Delete(msgspec.Struct, tag="delete"):
    id: int
    handle: str


class Deleted(msgspec.Struct, tag="deleted"):
    id: int
    found: bool
    """False: there was no such shape."""


class Gone(msgspec.Struct, tag="gone"):
    handle: str
    reason: str
    number: int
    """Echoed by the worker's ``Dropped`` once it forgot the shape."""


class Dropped(msgspec.Struct, tag="dropped"):
    number: int


class Subset(msgspec.Struct, tag="subset"):
    id: int
    handle: str
    fields: dict[str, Any]
    """The request's ``subset__*`` fields, as parsed from its query or body."""
    schema: str
    """The shape's ``electric-schema`` header."""


class SubsetDone(msgspec.Struct, tag="subset-done"):
    id: int
    status: int
    """200, 409 (the shape is gone), or an error response's status."""
    body: bytes = b""
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class Ready(msgspec.Struct, tag="ready"):
    pid: int


class Found(msgspec.Struct, tag="found"):
    id: int
    handle: str | None = None
    """None: no such shape (``Ask(create=False)``), or ``error`` says why not."""
    table: Table | None = None
    snapshot: SnapshotInfo | None = None
    size: int = 0
    """Bytes of its log when the reply was sent."""
    state: str = "live"
    tables: list[Table] = msgspec.field(default_factory=list)
    """The tables of its subqueries (as the replicating process read them)."""
    error: str | None = None
    """``shape`` (the definition is wrong: field, message), ``unavailable`` (message,
    retry_after), ``database`` (the catalog could not be asked) or ``internal`` (a bug,
    logged by the replicating process)."""
    field: str = ""
    message: str = ""
    retry_after: int = 5


class Grown(msgspec.Struct, tag="grown"):
    handle: str
    size: int
    state: str
    """``ShapeState`` value: snapshotting, live, gone, failed."""
    lsn: int
    """The engine's last seen LSN."""
    reason: str = ""


class Status(msgspec.Struct, tag="status"):
    status: str
    problem: str | None
    storage_error: str | None
    lsn: int
    warnings: list[str] = []


Message = (
    Ask | Delete | Deleted | Gone | Dropped | Subset | SubsetDone | Ready | Found | Grown | Status
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def frame(message: Message) -> bytes:
    payload = _encoder.encode(message)
    return _LENGTH.pack(len(payload)) + payload


async def receive(reader: asyncio.StreamReader) -> Message:
    """The next message; raises asyncio.IncompleteReadError when the other side closed."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return _decoder.decode(await reader.readexactly(length))
