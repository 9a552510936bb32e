"""pysync's replication slot and the server's fitness for logical replication: checks
that name the fix, slot creation, position and identity."""

from __future__ import annotations

import secrets

import psycopg
from psycopg import errors

from pysync.postgres.lsn import parse_lsn
from pysync.postgres.publication import check_name

RANDOM_DIGITS = 16
"""Hex digits of a random slot name's suffix (64 bits: two instances never collide)."""
MAX_RANDOM_BASE = 63 - 1 - RANDOM_DIGITS
"""Longest slot name a random suffix can be added to (slot names have 63 bytes)."""


class ReplicationError(RuntimeError):
    """Replication cannot run; the message says what to fix."""


class SlotInUseError(ReplicationError):
    pass


class SlotInvalidatedError(ReplicationError):
    """The slot lost WAL it needed: every shape must be resynced from a new slot."""


def check_preconditions(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Fail early, naming the fix, when this server or role cannot replicate."""
    (wal_level,) = conn.execute("SHOW wal_level").fetchone() or ("",)
    if wal_level != "logical":
        raise ReplicationError(
            f"wal_level is '{wal_level}', logical replication needs 'logical'. Run "
            "ALTER SYSTEM SET wal_level = logical; then restart Postgres."
        )
    row = conn.execute(
        "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if not row or not row[0]:
        user = conn.info.user
        raise ReplicationError(
            f'role "{user}" has no REPLICATION privilege. As a superuser, run: '
            f'ALTER ROLE "{user}" WITH REPLICATION;'
        )


def _slot_state(
    conn: psycopg.Connection[tuple[object, ...]], slot: str
) -> tuple[object, ...] | None:
    return conn.execute(
        "SELECT plugin, active_pid, wal_status, database = current_database(), two_phase, "
        "coalesce(confirmed_flush_lsn - '0/0', 0)::bigint "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()


def slot_position(conn: psycopg.Connection[tuple[object, ...]], slot: str) -> int | None:
    """The slot's confirmed_flush_lsn, or None when there is no such slot."""
    state = _slot_state(conn, slot)
    return None if state is None else int(state[5])  # type: ignore[call-overload]


def ensure_slot(
    conn: psycopg.Connection[tuple[object, ...]], slot: str, *, two_phase: bool = False
) -> bool:
    """Create the logical slot unless it exists; True if it was created.

    Raises when the slot exists but cannot be used: lost WAL, another plugin or
    database.
    """
    check_name("slot", slot)
    state = _slot_state(conn, slot)
    if state is None:
        try:
            conn.execute(
                "SELECT pg_create_logical_replication_slot(%s, 'pgoutput', false, %s)",
                (slot, two_phase),
            )
        except errors.DuplicateObject:
            return False
        return True
    plugin, _active_pid, wal_status, same_db, _two_phase, _confirmed = state
    if wal_status == "lost":
        raise SlotInvalidatedError(
            f"replication slot '{slot}' was invalidated (wal_status = lost): Postgres removed "
            "WAL it still needed (see max_slot_wal_keep_size). Drop it with "
            f"SELECT pg_drop_replication_slot('{slot}'); pysync then creates a new slot and "
            "resyncs every shape."
        )
    if plugin != "pgoutput" or not same_db:
        raise ReplicationError(
            f"replication slot '{slot}' exists but belongs to another plugin or database; "
            "configure another slot name"
        )
    return False


def random_name(base: str) -> str:
    """``<base>_<16 random hex digits>``: a temporary slot's name that no other instance
    of pysync (or Electric) has."""
    if len(base) > MAX_RANDOM_BASE:
        raise ValueError(f"slot name {base!r} is too long for a random suffix")
    return f"{base}_{secrets.token_hex(RANDOM_DIGITS // 2)}"


def check_no_permanent_slot(conn: psycopg.Connection[tuple[object, ...]], slot: str) -> None:
    """A temporary slot cannot take the name of a permanent one (made by a pysync
    without a temporary slot): say how to free the name."""
    row = conn.execute(
        "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND NOT temporary", (slot,)
    ).fetchone()
    if row is not None:
        raise ReplicationError(
            f"a permanent replication slot '{slot}' exists (made by a pysync without a "
            "temporary slot): drop it with "
            f"SELECT pg_drop_replication_slot('{slot}'); or give the temporary slot "
            "another name (--slot / PYSYNC_SLOT)"
        )


def create_temporary_slot(conn: psycopg.Connection[tuple[object, ...]], slot: str) -> int:
    """Create a temporary logical slot on the replication connection ``conn``; Postgres
    drops it when that connection ends (however it ends). Returns its start position.

    Raises psycopg.errors.DuplicateObject while another session holds a slot of this
    name."""
    check_name("slot", slot)
    row = conn.execute(
        f'CREATE_REPLICATION_SLOT "{slot}" TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT'
    ).fetchone()
    assert row is not None
    return parse_lsn(str(row[1]))


def slot_holder(conn: psycopg.Connection[tuple[object, ...]], slot: str) -> int | None:
    """The PID of the process replicating from the slot now, or None."""
    row = conn.execute(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s AND active", (slot,)
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None  # type: ignore[call-overload]


def slot_in_use(slot: str, pid: int) -> SlotInUseError:
    return SlotInUseError(
        f"replication slot '{slot}' is in use by another process (Postgres backend PID {pid}): "
        "another pysync (a `pysync serve` or an app's Sync) replicates from this database "
        "with the same slot. Stop it, or give each one its own slot and publication "
        "(--slot/--publication, PYSYNC_SLOT/PYSYNC_PUBLICATION, or Sync(slot=..., publication=...))."
    )


def drop_slot(conn: psycopg.Connection[tuple[object, ...]], slot: str) -> None:
    check_name("slot", slot)
    conn.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    )


def identify_system(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[str, int, str]:
    """(system identifier, timeline, database) of the server behind ``conn``."""
    row = conn.execute("IDENTIFY_SYSTEM").fetchone()
    assert row is not None
    system_id, timeline, _xlogpos, dbname = row
    return str(system_id), int(timeline), str(dbname)  # type: ignore[call-overload]
