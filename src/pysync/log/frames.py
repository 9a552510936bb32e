"""The bytes of a shape log: one frame per entry, checksummed.

A frame is ``[magic u8][flags u8][tx u64][op u64][length u32][crc32 of the header fields
u32][crc32 of the payload u32][payload]``. This module is the one place that defines that
layout: how a header is made (``frame_header``) and what makes a header invalid
(``header_problem``). The storages that read frames back (``file_storage.FileStorage``,
``followed_storage.FollowedStorage``) unpack headers with ``FIELDS`` and ``CRCS`` in
their own loops rather than through a function call per frame.
"""

from __future__ import annotations

import zlib
from struct import Struct
from typing import NamedTuple

MAGIC = 0xA7
MAGIC_BYTE = bytes([MAGIC])
"""What each frame starts with: recovery looks for it to find a frame after a bad one."""
FLAG_SNAPSHOT_END = 1
FIELDS = Struct(">BQQI")  # flags, tx, op, length
CRCS = Struct(">II")  # of the fields, of the payload
HEADER_SIZE = 1 + FIELDS.size + CRCS.size
MAX_FRAME = 1 << 31
"""Larger than any chunk or change we write: a larger length is corruption, not data."""

_crc32 = zlib.crc32
_HEADER = Struct(">BBQQIII")  # magic, the fields, their crc32, the payload's crc32
_pack_fields = FIELDS.pack
_pack_header = _HEADER.pack


def frame_header(tx: int, op: int, payload: bytes, flags: int = 0) -> bytes:
    """The header of a frame for ``payload`` (the payload follows it)."""
    # The header has a checksum of its own: a torn frame (valid header, payload cut
    # short by the end of the file) is then told apart from a corrupted length.
    length = len(payload)
    fields_crc = _crc32(_pack_fields(flags, tx, op, length))
    return _pack_header(MAGIC, flags, tx, op, length, fields_crc, _crc32(payload))


class Frame(NamedTuple):
    tx: int
    op: int
    flags: int
    position: int
    """Where the payload starts."""
    length: int


def header_problem(header: bytes, remaining: int) -> str | None:
    """Why ``header`` cannot start a frame of the ``remaining`` bytes, or None."""
    if len(header) < HEADER_SIZE:
        return "torn"
    if header[0] != MAGIC:
        return "bad frame marker"
    fields = header[1 : 1 + FIELDS.size]
    (crc, _) = CRCS.unpack_from(header, 1 + FIELDS.size)
    if _crc32(fields) != crc:
        return "header checksum mismatch"
    flags, _, _, length = FIELDS.unpack(fields)
    if flags & ~FLAG_SNAPSHOT_END or length > MAX_FRAME:
        return "bad frame header"
    if HEADER_SIZE + length > remaining:
        return "torn"  # a whole header whose payload the end of the file cut short
    return None
