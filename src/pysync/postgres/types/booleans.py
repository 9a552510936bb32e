"""Postgres booleans in text form: ``bool``."""

from __future__ import annotations

_BOOL_WORDS = [("true", True), ("false", False), ("yes", True), ("no", False)]


def parse_bool(text: str) -> bool:
    s = text.strip().lower()
    if s in ("t", "1", "on"):
        return True
    if s in ("f", "0", "of", "off"):
        return False
    if s == "o":
        raise ValueError(text)
    if s:
        for word, value in _BOOL_WORDS:
            if word.startswith(s):
                return value
    raise ValueError(text)


def format_bool(value: bool) -> str:
    return "true" if value else "false"
