"""The logical replication stream: slot, START_REPLICATION, feedback, reconnects.

psycopg 3 has no replication API, but a connection opened with
``replication="database"`` accepts ``START_REPLICATION`` (psycopg >= 3.3) and is then in
COPY BOTH mode; the libpq wrapper ``conn.pgconn`` does the rest. libpq gives us SCRAM,
TLS, ``.pgpass`` and PG* variables for free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import time
from collections.abc import AsyncIterator
from struct import Struct

import msgspec
import psycopg
from psycopg import errors, pq

from pysync.postgres.lsn import format_lsn
from pysync.postgres.pgoutput import DecodeError, Decoder, Message
from pysync.postgres.publication import check_name, ensure_publication
from pysync.postgres.session import display_options
from pysync.postgres.slot import (
    ReplicationError,
    SlotInUseError,
    SlotInvalidatedError,
    check_no_permanent_slot,
    check_preconditions,
    create_temporary_slot,
    ensure_slot,
    identify_system,
    slot_holder,
    slot_in_use,
    slot_position,
)
from pysync.postgres.transactions import RelationChange, Transaction, TransactionAssembler

log = logging.getLogger(__name__)

_wal_end = Struct(">Q").unpack_from
_keepalive = Struct(">QqB").unpack_from
_status = Struct(">cQQQqB").pack
# Postgres timestamps count microseconds from 2000-01-01 UTC.
_PG_EPOCH_OFFSET_US = 946_684_800_000_000


def check_publication(conn: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    """Manual publishing: the publication must exist and publish every operation (Electric's
    messages); nothing is changed."""
    row = conn.execute(
        "SELECT pubinsert AND pubupdate AND pubdelete AND pubtruncate "
        "FROM pg_publication WHERE pubname = %s",
        (name,),
    ).fetchone()
    if row is None:
        raise ReplicationError(
            f'Publication "{name}" not found in the database (manual publishing: a '
            f"database owner must run CREATE PUBLICATION {name} FOR TABLE ...;)"
        )
    if not row[0]:
        raise ReplicationError(
            f'Publication "{name}" does not publish all required operations: '
            "INSERT, UPDATE, DELETE, TRUNCATE"
        )


class ConnectionLost(Exception):
    """The replication connection ended; the stream reconnects."""


class Connected(msgspec.Struct, frozen=True):
    """Yielded on every (re)connect, before anything read on that connection: what the
    server and the slot are. The consumer compares it with what it knows, so that it
    never carries on silently across a gap (a slot recreated, moved, or another server)."""

    system_id: str
    timeline: int
    database: str
    slot: str
    created: bool
    """This connect created the slot (it was missing)."""
    confirmed_lsn: int
    """The slot's ``confirmed_flush_lsn`` when connecting."""
    start_lsn: int
    """Where this connection asked to start."""


class Idle(msgspec.Struct, frozen=True):
    """Between transactions at WAL position ``lsn``: everything before it was delivered.
    Acknowledging it (once what was delivered is durable) keeps an idle slot from
    holding WAL."""

    lsn: int


class Disconnected(msgspec.Struct, frozen=True):
    """The connection was lost and the stream is about to reconnect (a ``Connected``
    follows when it has): until then nothing streams, which health reports."""

    reason: str


Item = Transaction | Message | RelationChange | Connected | Idle | Disconnected


def _now_pg_us() -> int:
    return time.time_ns() // 1000 - _PG_EPOCH_OFFSET_US


class ReplicationStream:
    """Committed transactions from pysync's slot, in commit order.

    The consumer calls ``acknowledge(end_lsn)`` once a transaction is durable on its side;
    only acknowledged positions are confirmed to Postgres, so after a crash the slot
    resends everything after the last acknowledged transaction.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        slot: str = "pysync",
        publication: str = "pysync",
        protocol_version: int = 1,
        streaming: bool | str = False,
        two_phase: bool = False,
        messages: bool = True,
        start_lsn: int = 0,
        status_interval: float = 10.0,
        idle_feedback: float = 0.25,
        reconnect: bool = True,
        max_backoff: float = 5.0,
        slot_busy_timeout: float = 15.0,
        manual_publication: bool = False,
        temporary: bool = False,
    ) -> None:
        if streaming not in (False, True, "on", "parallel"):
            raise ValueError(f"streaming must be False, True/'on' or 'parallel', not {streaming!r}")
        if streaming == "parallel" and protocol_version < 4:
            protocol_version = 4
        if streaming and protocol_version < 2:
            protocol_version = 2
        if two_phase and protocol_version < 3:
            protocol_version = 3
        self.conninfo = conninfo
        self.slot = check_name("slot", slot)
        self.publication = check_name("publication", publication)
        self.protocol_version = protocol_version
        self.streaming = streaming
        self.two_phase = two_phase
        self.messages = messages
        self.status_interval = status_interval
        # A walsender sometimes misses the wakeup for a commit (seen with Postgres 18: a
        # plain pg_recvlogical got one 9.5 s late) and sends it only when the client next
        # writes. A status update after each quiet ``idle_feedback`` seconds bounds that
        # delay; it costs one 34-byte message per quiet period.
        self.idle_feedback = idle_feedback
        self.reconnect = reconnect
        self.max_backoff = max_backoff
        self.slot_busy_timeout = slot_busy_timeout
        self.manual_publication = manual_publication
        """Only check the publication, never create or alter it."""
        if temporary and two_phase:
            raise ValueError("a temporary slot is made without two-phase decoding")
        self.temporary = temporary
        """The slot is temporary: each replication connection makes it (it ends with the
        connection), so every connect reports a new slot."""
        self.assembler = TransactionAssembler()
        self.received_lsn = start_lsn
        """The WAL position Postgres has sent us up to."""
        self.acknowledged_lsn = start_lsn
        """Declared durable by the consumer; what we confirm to Postgres."""
        self.delivered_lsn = start_lsn
        self.waits = 0
        """How many times the stream found the socket drained and waited for data: a
        consumer that sees it unchanged for a while is working through a backlog."""
        """End LSN of the last transaction handed to the consumer."""
        self.slot_created = False
        """Whether the last ``setup`` created the slot."""
        self._slot_lsn = 0
        self._confirmed_lsn = 0
        self._last_status = 0.0
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._pending: psycopg.Connection[tuple[object, ...]] | None = None
        """A replication connection ``identify`` made the temporary slot on: the next
        connect streams on it (closing it would drop the slot)."""
        self._closed = False

    # -- public ---------------------------------------------------------------------

    def setup(self) -> None:
        """Check preconditions, create the publication and slot if missing."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            check_preconditions(conn)
            if self.manual_publication:
                check_publication(conn, self.publication)
            else:
                ensure_publication(conn, self.publication)
            if self.temporary:
                check_no_permanent_slot(conn, self.slot)  # made on connecting
                return
            self.slot_created = ensure_slot(conn, self.slot, two_phase=self.two_phase)
            self._slot_lsn = slot_position(conn, self.slot) or 0

    async def identify(self, busy_timeout: float = 5.0) -> Connected:
        """``setup``, then what ``transactions`` would report on connecting, without
        starting to replicate (so the consumer can check the slot before it serves).

        Raises SlotInUseError when another process still replicates from the slot after
        ``busy_timeout`` seconds (a killed consumer's walsender lingers for a moment)."""
        await asyncio.to_thread(self.setup)
        deadline = time.monotonic() + busy_timeout
        while (holder := await asyncio.to_thread(self._slot_holder)) is not None:
            if time.monotonic() > deadline:
                raise slot_in_use(self.slot, holder)
            await asyncio.sleep(0.2)
        conn = await asyncio.to_thread(self._replication_connect)
        keep = False
        try:
            system_id, timeline, database = await asyncio.to_thread(identify_system, conn)
            if self.temporary:
                await asyncio.to_thread(self._make_temporary, conn)
                self._pending, keep = conn, True
        except errors.DuplicateObject as exc:
            raise self._taken(exc) from exc
        finally:
            if not keep:
                conn.close()
        return Connected(
            system_id, timeline, database, self.slot, self.slot_created, self._slot_lsn, 0
        )

    def _make_temporary(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        self._slot_lsn = create_temporary_slot(conn, self.slot)
        self.slot_created = True
        log.info("created temporary replication slot %s", self.slot)

    def _taken(self, exc: psycopg.Error) -> SlotInUseError:
        return SlotInUseError(
            f"replication slot '{self.slot}' is in use by another process "
            f"({exc.diag.message_primary}). Stop the other pysync or give each "
            "its own slot and publication."
        )

    def _slot_holder(self) -> int | None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            return slot_holder(conn, self.slot)

    def rewind(self) -> None:
        """Resume from the last acknowledged position on the next connect: what was
        delivered after it is delivered again (a consumer that could not store it)."""
        self.delivered_lsn = self.acknowledged_lsn

    def reset(self) -> None:
        """Forget every position: the next connect starts where the slot is (a new slot)."""
        self.received_lsn = self.acknowledged_lsn = self.delivered_lsn = 0
        self.assembler.reset()

    def acknowledge(self, lsn: int) -> None:
        """Everything up to ``lsn`` (a transaction's end LSN) is durable downstream."""
        if lsn > self.acknowledged_lsn:
            self.acknowledged_lsn = lsn

    async def transactions(self) -> AsyncIterator[Item]:
        """Committed transactions, forever, with what a consumer needs in order around
        them: ``Connected`` at each (re)connect, ``Disconnected`` when a connection is
        lost, ``RelationChange`` when a table's columns change, ``Idle`` positions,
        non-transactional logical messages.

        Reconnects with backoff after a dropped connection or a Postgres restart, and
        resumes after the last delivered transaction. A transaction counts as delivered
        once the consumer asked for the next item: one whose handling raised is sent
        again after a reconnect.
        """
        backoff = 0.1
        while not self._closed:
            try:
                await asyncio.to_thread(self.setup)
                connected = await self._start()
                backoff = 0.1
                yield connected
                async for item in self._read():
                    yield item
            except (ConnectionLost, psycopg.OperationalError) as exc:
                self.disconnect()
                if self._closed:
                    return
                if not self.reconnect:
                    raise ReplicationError(f"replication connection lost: {exc}") from exc
                log.warning("replication connection lost (%s); reconnecting in %.1fs", exc, backoff)
                yield Disconnected(f"replication connection lost: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    async def close(self) -> None:
        """Confirm what was acknowledged and disconnect."""
        self._closed = True
        self.confirm()
        self.disconnect()

    def confirm(self) -> None:
        """Confirm what was acknowledged now (before disconnecting: the slot then holds
        no WAL pysync has stored)."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                self._send_status(force=True)

    # -- connection -----------------------------------------------------------------

    def _start_command(self) -> str:
        options = [
            f"proto_version '{self.protocol_version}'",
            f"publication_names '{self.publication}'",
        ]
        if self.messages:
            options.append("messages 'true'")
        if self.streaming:
            options.append(f"streaming '{'parallel' if self.streaming == 'parallel' else 'on'}'")
        if self.two_phase:
            options.append("two_phase 'on'")
        start = format_lsn(max(self.acknowledged_lsn, self.delivered_lsn))
        return f'START_REPLICATION SLOT "{self.slot}" LOGICAL {start} ({", ".join(options)})'

    async def _start(self) -> Connected:
        deadline = time.monotonic() + self.slot_busy_timeout
        while True:
            conn, self._pending = self._pending, None
            if conn is not None:
                self.slot_created = False  # made (and reported) by ``identify``
                has_slot = True
            else:
                conn = await asyncio.to_thread(self._replication_connect)
                has_slot = not self.temporary  # a temporary one is made on this connection
            try:
                identity = await asyncio.to_thread(identify_system, conn)
                if not has_slot:
                    await asyncio.to_thread(self._make_temporary, conn)
                start_lsn = max(self.acknowledged_lsn, self.delivered_lsn)
                await asyncio.to_thread(conn.execute, self._start_command())
            except (errors.ObjectInUse, errors.DuplicateObject) as exc:
                conn.close()
                # A killed consumer's walsender lingers until it notices the closed socket
                # (with its temporary slot, if it had one).
                if time.monotonic() > deadline:
                    raise self._taken(exc) from exc
                await asyncio.sleep(0.2)
                continue
            except errors.ObjectNotInPrerequisiteState as exc:
                conn.close()
                raise SlotInvalidatedError(
                    f"replication slot '{self.slot}' cannot be used: {exc.diag.message_primary}. "
                    f"Drop it with SELECT pg_drop_replication_slot('{self.slot}'); pysync then "
                    "creates a new slot and resyncs every shape."
                ) from exc
            except BaseException:
                conn.close()
                raise
            break
        conn.pgconn.nonblocking = 1
        self._conn = conn
        self._decoder = Decoder(
            self.protocol_version, parallel_streaming=self.streaming == "parallel"
        )
        self.assembler.reset()
        self._confirmed_lsn = 0
        start = max(start_lsn, self._slot_lsn)
        log.info("replicating from slot %s at %s", self.slot, format_lsn(start))
        system_id, timeline, database = identity
        return Connected(
            system_id, timeline, database, self.slot, self.slot_created, self._slot_lsn, start_lsn
        )

    def _replication_connect(self) -> psycopg.Connection[tuple[object, ...]]:
        # The walsender formats values with its session's settings: make them ours.
        options = psycopg.conninfo.conninfo_to_dict(self.conninfo).get("options") or ""
        return psycopg.connect(
            self.conninfo,
            autocommit=True,
            replication="database",
            options=f"{options} {display_options()}".strip(),
        )

    def disconnect(self) -> None:
        """Close the replication connection; the next ``transactions()`` reconnects."""
        for conn in (self._conn, self._pending):
            if conn is not None:
                try:
                    conn.pgconn.finish()
                finally:
                    conn.close()
        self._conn = self._pending = None

    # -- the loop -------------------------------------------------------------------

    async def _read(self) -> AsyncIterator[Item]:
        assert self._conn is not None
        pgconn = self._conn.pgconn
        decode = self._decoder.decode_unlocated
        feed = self.assembler.feed
        loop = asyncio.get_running_loop()
        while True:
            n, data = pgconn.get_copy_data(1)
            if n == 0:
                # Feedback first: PQflush may read pending input into libpq's buffer, and
                # then the socket would not wake us for data we already hold.
                self._send_status()
                # With TLS libpq reads one record per call: drain before sleeping.
                pgconn.consume_input()
                n, data = pgconn.get_copy_data(1)
                if n == 0:
                    self.waits += 1
                    if not await self._wait_readable(loop, pgconn.socket):
                        self._send_status(force=True)  # quiet: see ``idle_feedback``
                    pgconn.consume_input()
                    continue
            if n < 0:
                raise ConnectionLost(self._copy_end_reason(pgconn))
            kind = data[0]
            if kind == 119:  # 'w' XLogData
                (wal_end,) = _wal_end(data, 9)
                if wal_end > self.received_lsn:
                    self.received_lsn = wal_end
                try:
                    item = feed(decode(bytes(data[25:])))
                except DecodeError as exc:
                    (start,) = _wal_end(data, 1)
                    raise DecodeError(f"{exc} at LSN {format_lsn(start)}") from None
                if item is None:
                    continue
                if type(item) is Transaction:
                    end_lsn = item.end_lsn
                    if end_lsn <= self.delivered_lsn:
                        continue  # delivered before a reconnect
                    yield item
                    # Only now: the consumer handled it (see ``transactions``).
                    self.delivered_lsn = end_lsn
                else:
                    yield item
                self._send_status()
            elif kind == 107:  # 'k' keepalive
                wal_end, _, reply = _keepalive(data, 1)
                if wal_end > self.received_lsn:
                    self.received_lsn = wal_end
                if not self.assembler.in_transaction and wal_end > self.delivered_lsn:
                    yield Idle(wal_end)
                    self.delivered_lsn = wal_end
                self._send_status(force=bool(reply))

    async def _wait_readable(self, loop: asyncio.AbstractEventLoop, fd: int) -> bool:
        """Wait until ``fd`` is readable (True) or ``idle_feedback`` seconds pass (False)."""
        ready = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            # asyncio.wait, not wait_for: on Python 3.11 wait_for swallows a cancellation
            # that races with the future completing, and the engine could not be stopped.
            await asyncio.wait([ready], timeout=min(self.status_interval, self.idle_feedback))
        finally:
            loop.remove_reader(fd)
        return ready.done()

    def _copy_end_reason(self, pgconn: pq.abc.PGconn) -> str:
        result = pgconn.get_result()
        if result is not None and result.error_message:
            return result.error_message.decode(errors="replace").strip()
        return pgconn.error_message.decode(errors="replace").strip() or "COPY ended"

    # -- feedback -------------------------------------------------------------------

    def request_position(self) -> None:
        """Ask the server to answer with a keepalive now: an ``Idle`` with its position
        follows soon (if no transaction is being read)."""
        self._send_status(force=True, reply=True)

    def _send_status(self, force: bool = False, reply: bool = False) -> None:
        now = time.monotonic()
        since = now - self._last_status
        due = since >= self.status_interval or (
            self.acknowledged_lsn != self._confirmed_lsn and since >= 0.1
        )
        conn = self._conn
        if conn is None or not (force or due):
            return
        pgconn = conn.pgconn
        flushed = self.acknowledged_lsn
        pgconn.put_copy_data(
            _status(b"r", self.received_lsn, flushed, flushed, _now_pg_us(), int(reply))
        )
        while pgconn.flush():
            select.select([], [pgconn.socket], [], 1.0)
        self._confirmed_lsn = flushed
        self._last_status = now
