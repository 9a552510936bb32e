"""Log sequence numbers: 64-bit WAL positions, written ``X/Y`` by Postgres."""

from __future__ import annotations


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, sep, low = text.partition("/")
    if not sep:
        raise ValueError(f"invalid LSN {text!r}: expected the form X/Y (hex)")
    return (int(high, 16) << 32) | int(low, 16)
