"""Session settings that fix the text format of values.

Values travel as Postgres text from pgoutput and from snapshot queries to the client,
so both sessions must format them the same way, and as Electric does.
"""

from __future__ import annotations

from typing import Any

import psycopg

DISPLAY_SETTINGS: dict[str, str] = {
    "bytea_output": "hex",
    "DateStyle": "ISO, DMY",
    "TimeZone": "UTC",
    "extra_float_digits": "1",
    "IntervalStyle": "iso_8601",
}


def display_options() -> str:
    """The settings as a libpq ``options`` value (``-c name=value ...``)."""
    return " ".join(
        f"-c {name}={value.replace(' ', '')}" for name, value in DISPLAY_SETTINGS.items()
    )


class PooledConnection(psycopg.AsyncConnection[Any]):
    """A session through a transaction pooler (PgBouncer's ``pool_mode=transaction``):
    each transaction may run on another server connection, so nothing is set for the
    session: ``settings`` are applied in each transaction instead (``set_config(name,
    value, true)``, i.e. ``SET LOCAL``). (Its pool also turns psycopg's preparing of
    statements off: ``prepare_threshold=None``.)"""

    settings: dict[str, str] = {}


def local_settings(conn: psycopg.AsyncConnection[Any]) -> dict[str, str]:
    """What a transaction of ``conn`` must set itself: nothing on a direct session (its
    settings came with the connection's start-up parameters)."""
    return conn.settings if isinstance(conn, PooledConnection) else {}


def set_locals(settings: dict[str, str]) -> tuple[str, list[str]]:
    """``set_config(%s, %s, true), ...`` (for a SELECT list) and its parameters."""
    return (
        ", ".join("set_config(%s, %s, true)" for _ in settings),
        [part for item in settings.items() for part in item],
    )
