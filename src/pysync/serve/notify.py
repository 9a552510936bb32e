"""The channel between the replicating process and its HTTP workers: msgspec messages
over a UNIX stream socket, each framed by its length.

Worker -> hub: ``Ask`` (the shape for a definition, made if asked to), ``Delete``,
``Ready``. Hub -> worker: ``Found`` and ``Deleted`` (replies), ``Grown`` (a shape's log
has new frames, or the shape changed state) and ``Status`` (the engine's health, the
last LSN seen). Messages on one connection arrive in order, so a worker that got the
reply for a shape then gets every later announcement for it.
"""

from __future__ import annotations

import asyncio
import struct

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
    handle: str


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
    error: str | None = None
    """``shape`` (the definition is wrong: field, message), ``unavailable`` (message,
    retry_after) or ``database`` (the catalog could not be asked)."""
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


Message = Ask | Delete | Ready | Found | Grown | Status

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def frame(message: Message) -> bytes:
    payload = _encoder.encode(message)
    return _LENGTH.pack(len(payload)) + payload


async def receive(reader: asyncio.StreamReader) -> Message:
    """The next message; raises asyncio.IncompleteReadError when the other side closed."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return _decoder.decode(await reader.readexactly(length))
