"""Session settings that fix the text format of values.

Values travel as Postgres text from pgoutput and from snapshot queries to the client,
so both sessions must format them the same way, and as Electric does.
"""

from __future__ import annotations

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
