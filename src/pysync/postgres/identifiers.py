"""Postgres identifiers as clients write them in ``table`` and ``columns`` params.

Follows Electric's ``Electric.Postgres.Identifiers`` so that the same inputs are
accepted, normalised and rejected with the same messages.
"""

from __future__ import annotations

import re
import string
import unicodedata

MAX_LENGTH = 63
"""NAMEDATALEN - 1. Postgres would silently truncate; Electric refuses instead."""

DEFAULT_SCHEMA = "public"

# Only ASCII letters are folded, as Postgres does in a multi-byte server encoding.
_ASCII_DOWNCASE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_UNESCAPED_QUOTE = re.compile(r'(?<!")"(?!")')
# A comma splits only when an even number of quotes follows it (Electric's regex), so
# that unbalanced input fails with the same message as upstream.
_COLUMN_SEPARATOR = re.compile(r',(?=(?:[^"]*"[^"]*")*[^"]*\Z)')
_DIGITS_UNDERSCORE_DOLLAR = frozenset("_$0123456789")


class IdentifierError(ValueError):
    """The message is the one Electric reports to the client."""


def parse_identifier(ident: str) -> str:
    """The name ``ident`` denotes: quotes removed and ``""`` unescaped, or ASCII-down-cased."""
    if ident.startswith('"') and ident.endswith('"'):
        # A lone '"' lands here too, as an empty delimited identifier (as upstream).
        name = _parse_quoted(ident[1:-1])
    else:
        name = _parse_unquoted(ident)
    if len(name) > MAX_LENGTH:
        raise IdentifierError(f"Identifier is too long (max length is {MAX_LENGTH})")
    return name


def parse_relation(ident: str) -> tuple[str, str]:
    """``(schema, name)`` of ``name`` or ``schema.name``; dots inside quotes don't split."""
    parts = _split_on_unquoted_dots(ident)
    if len(parts) == 1:
        return DEFAULT_SCHEMA, parse_identifier(parts[0])
    if len(parts) == 2:
        return parse_identifier(parts[0]), parse_identifier(parts[1])
    raise IdentifierError(f"Invalid relation identifier, too many delimiters: {ident}")


def parse_column_list(columns: str) -> list[str]:
    """The names in a comma-separated ``columns`` param, in the given order."""
    return [parse_identifier(part) for part in _COLUMN_SEPARATOR.split(columns)]


def quote_identifier(name: str) -> str:
    """``name`` as a delimited identifier, safe to splice into SQL."""
    return '"' + name.replace('"', '""') + '"'


def _parse_quoted(inner: str) -> str:
    if not inner:
        raise IdentifierError("Invalid zero-length delimited identifier")
    if _UNESCAPED_QUOTE.search(inner):
        raise IdentifierError(f"Invalid identifier with unescaped quote: {inner}")
    return inner.replace('""', '"')


def _parse_unquoted(ident: str) -> str:
    if not ident:
        raise IdentifierError("Invalid zero-length delimited identifier")
    if not _is_valid_unquoted(ident):
        raise IdentifierError(f"Invalid unquoted identifier contains special characters: {ident}")
    return ident.translate(_ASCII_DOWNCASE)


def _is_valid_unquoted(ident: str) -> bool:
    """``^[\\pL_][\\pL\\pM_0-9$]*$``; Python's ``re`` has no Unicode property classes."""
    first = ident[0]
    if first != "_" and not unicodedata.category(first).startswith("L"):
        return False
    return all(
        ch in _DIGITS_UNDERSCORE_DOLLAR or unicodedata.category(ch)[0] in "LM" for ch in ident[1:]
    )


def _split_on_unquoted_dots(text: str) -> list[str]:
    parts = []
    start = 0
    in_quotes = False
    for i, ch in enumerate(text):
        if ch == '"':
            # An escaped "" toggles twice, so it needs no special case.
            in_quotes = not in_quotes
        elif ch == "." and not in_quotes:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts
