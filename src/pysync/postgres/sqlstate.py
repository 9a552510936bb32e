"""A Postgres error as its condition name and SQLSTATE, never its message.

Postgres' messages quote the value they failed on (``invalid input syntax for type
integer: "<a row's value>"``): a client must not read a column it was not given that
way, and a log at INFO or above holds no row values. The class says what went wrong
(``invalid_text_representation``, ``division_by_zero``) without any value.
"""

from __future__ import annotations

import re

import psycopg

_WORD_START = re.compile(r"(?<!^)(?=[A-Z])")


def error_class(exc: BaseException) -> str:
    """``invalid_text_representation (SQLSTATE 22P02)``; the exception's type name for
    an error that did not come from the server."""
    code = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    if not code:
        return type(exc).__name__
    # psycopg names each SQLSTATE's class after Postgres' condition name, in CamelCase
    # (a trailing _ where the name is a Python builtin's: InternalError_).
    name = _WORD_START.sub("_", type(exc).__name__.rstrip("_")).lower()
    return f"{name} (SQLSTATE {code})"


def safe_reason(exc: BaseException) -> str:
    """What a log line above DEBUG may say of a failure: the class of an error from
    the server, the message of anything else (a lost connection, a full disk)."""
    if isinstance(exc, psycopg.Error) and exc.sqlstate:
        return error_class(exc)
    return str(exc) or type(exc).__name__
