"""Response bodies from a shape log: small ones built at once, large ones streamed.

A snapshot chunk is about 10 MB; building it in memory for every reader made 150 stalled
readers cost a gigabyte. A large body is read from storage in pieces as the client takes
them: the ASGI server's flow control holds the next piece until the socket drains, so a
stalled reader costs one piece.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from pysync.log.log import LogSlice
from pysync.log.storage import LogCutError, Reader
from pysync.shapes.consumer import ShapeConsumer

INLINE_BYTES = 256 * 1024
"""Bodies up to this size are built in memory (every live response is)."""
PIECE_BYTES = 32 * 1024

log = logging.getLogger(__name__)


def inline_body(consumer: ShapeConsumer, part: LogSlice, tail: bytes | None) -> bytes | None:
    """``[entries..., tail]`` as a JSON array, or None when it is too large to build."""
    if part.payloads is None and part.size > INLINE_BYTES:
        return None
    payloads = consumer.log.payloads(part)
    parts = payloads if tail is None else [*payloads, tail]
    return b"[" + b",".join(parts) + b"]"


def streamed_body(
    consumer: ShapeConsumer, part: LogSlice, tail: bytes | None
) -> AsyncIterator[bytes]:
    """``[entries..., tail]`` in pieces read from storage as the client takes them."""
    # The reader now, with the slice: the positions are those of the log as it is now,
    # and a compaction may replace its file before the first piece is read.
    return _pieces(consumer.log.storage.reader(), part.spans, tail, consumer.handle)


async def _pieces(
    reader: Reader, spans: list[tuple[int, int]], tail: bytes | None, handle: str
) -> AsyncIterator[bytes]:
    try:
        yield b"["
        first = True
        for group in _groups(spans):
            if len(group) == 1 and group[0][1] > PIECE_BYTES:
                # One large entry (a snapshot chunk): read in pieces as the client takes them.
                position, length = group[0]
                for start in range(0, length, PIECE_BYTES):
                    # In a thread: a piece not in the page cache must not stall the loop.
                    piece = await asyncio.to_thread(
                        reader.read, position + start, min(PIECE_BYTES, length - start)
                    )
                    yield piece if start or first else b"," + piece
            else:
                yield await asyncio.to_thread(_read_group, reader, group, first)
            first = False
        if tail is not None:
            yield (b"," if spans else b"") + tail
        yield b"]"
    except LogCutError as exc:
        # The status and offsets are sent: ending the body short (raising, so the
        # server drops the connection) is the only way left to not serve bytes that are
        # not the log's. The client retries and reads the replayed entries.
        log.warning("a response of shape %s ended unfinished: %s", handle, exc)
        raise
    finally:
        reader.close()


def _groups(spans: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """``spans`` in groups read as one: consecutive entries lying within PIECE_BYTES of
    the file (their frame headers between them), or one large entry alone. Read one by
    one, a catch-up of 30,000 small changes was 30,000 thread hops and 60,000 pieces
    (13 s for 3 MB on this machine)."""
    groups: list[list[tuple[int, int]]] = []
    group: list[tuple[int, int]] = []
    start = end = 0
    for position, length in spans:
        if group and (position < end or position + length - start > PIECE_BYTES):
            groups.append(group)
            group = []
        if not group:
            start = position
        group.append((position, length))
        end = position + length
    if group:
        groups.append(group)
    return groups


def _read_group(reader: Reader, group: list[tuple[int, int]], first: bool) -> bytes:
    """The group's entries, comma-separated (after a comma unless ``first``), from one
    read of the file region that holds them."""
    start = group[0][0]
    last, length = group[-1]
    region = memoryview(reader.read(start, last + length - start))
    parts = [region[p - start : p - start + n] for p, n in group]
    return (b"" if first else b",") + b",".join(parts)
