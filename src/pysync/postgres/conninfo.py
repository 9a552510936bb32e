"""The settings every connection to the database takes: TLS verification and TCP
liveness (Electric's ``ELECTRIC_DATABASE_CA_CERTIFICATE_FILE`` and
``ELECTRIC_DATABASE_TCP_*``), as libpq parameters merged into a conninfo.

Every URL pysync connects with goes through ``merge`` once, where it enters (``pysync
serve``, ``Sync``, ``Writer``, ``pysync uninstall``, ``pysync bench``); everything below
(pools, the replication connection, slot and publication checks) connects with the
merged conninfo, so no connection can miss them.

What the URL says and the settings say about one parameter: the settings win, as in
Electric, which reads these from its environment only. A CA file means full
verification (libpq's ``sslmode=verify-full``): Electric, given one, always verifies the
server's certificate and host name and never falls back to an unencrypted connection.
Without a CA file, libpq's default ``sslmode=prefer`` is Electric's default too (TLS
when the server offers it, else unencrypted); every other ``sslmode``/``ssl*`` parameter
of the URL is libpq's own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

from pysync.redact import HIDDEN, redacted

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class ConnectionSettings:
    """Durations in seconds; None leaves libpq's (and so the OS's) default."""

    ca_certificate_file: str | None = None
    """Trusted root certificate(s) to verify the server with (``sslrootcert``)."""
    keepalive_idle: float | None = None
    """Idle time before the first keepalive probe (``keepalives_idle``, whole seconds)."""
    keepalive_interval: float | None = None
    """Time between probes (``keepalives_interval``, whole seconds)."""
    keepalive_count: int | None = None
    """Unanswered probes before the connection is dropped (``keepalives_count``)."""
    user_timeout: float | None = None
    """How long sent data may stay unacknowledged (``tcp_user_timeout``, milliseconds)."""

    def params(self, given: Mapping[str, str]) -> dict[str, str]:
        """The libpq parameters to set over ``given`` (a conninfo's); ValueError when
        they contradict it."""
        params: dict[str, str] = {}
        if self.ca_certificate_file is not None:
            mode = given.get("sslmode")
            if mode == "disable":
                raise ValueError(
                    "its sslmode=disable contradicts the CA certificate file, which asks "
                    "for verified TLS"
                )
            params["sslrootcert"] = self.ca_certificate_file
            # verify-ca, asked for in the URL, is kept: it checks the chain but not the
            # host name (a server reached by an address its certificate does not name).
            params["sslmode"] = "verify-ca" if mode == "verify-ca" else "verify-full"
        keepalive = (self.keepalive_idle, self.keepalive_interval, self.keepalive_count)
        if any(value is not None for value in keepalive):
            # Any of them turns keepalives on, as in Electric (a URL's keepalives=0 too).
            params["keepalives"] = "1"
        if self.keepalive_idle is not None:
            params["keepalives_idle"] = str(_whole_seconds(self.keepalive_idle))
        if self.keepalive_interval is not None:
            params["keepalives_interval"] = str(_whole_seconds(self.keepalive_interval))
        if self.keepalive_count is not None:
            params["keepalives_count"] = str(self.keepalive_count)
        if self.user_timeout is not None:
            params["tcp_user_timeout"] = str(max(round(self.user_timeout * 1000), 1))
        return params


def _whole_seconds(seconds: float) -> int:
    # The kernel counts keepalive times in seconds; as Electric, at least one.
    return max(int(seconds), 1)


class UnparsableConninfo(ValueError):
    """Neither a URL nor ``key=value`` pairs, as libpq reads them."""


_QUOTED = re.compile(r'"([^"]+)"')


def _without_secrets(message: str, conninfo: str) -> str:
    """libpq's ``message`` about ``conninfo`` with each token it quotes hidden where that
    may be (a piece of) the password: libpq quotes the token it choked on
    (``invalid percent-encoded token: "<the password>"``, ``missing "=" after "<the
    password's second word>"``), and the message is shown, printed and logged. A token
    is hidden when ``redacted`` (which knows where passwords go) does not show it, or
    when it comes after a ``password`` keyword."""
    shown = redacted(conninfo)
    keyword = conninfo.lower().find("password")

    def hide(match: re.Match[str]) -> str:
        token = match.group(1)
        if token == "=":  # libpq's own: missing "=" after "..."
            return match.group(0)
        after_keyword = keyword >= 0 and conninfo.find(token, keyword) >= 0
        return f'"{HIDDEN}"' if token not in shown or after_keyword else match.group(0)

    return _QUOTED.sub(hide, message)


def check(conninfo: str) -> dict[str, str]:
    """``conninfo``'s parameters; ValueError (UnparsableConninfo when it cannot be
    parsed) for a bad one libpq would only report at connect time."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        message = str(exc).strip().replace("\n", " ")
        raise UnparsableConninfo(_without_secrets(message, conninfo)) from None
    mode = given.get("sslmode")
    if mode is not None and mode not in SSL_MODES:
        raise ValueError(f"sslmode {mode!r} is not one of {', '.join(SSL_MODES)}")
    return {key: str(value) for key, value in given.items() if value is not None}


def merge(conninfo: str, settings: ConnectionSettings) -> str:
    """``conninfo`` (a URL or ``key=value`` pairs) with ``settings`` as libpq parameters;
    unchanged when there are none. ValueError for a bad conninfo or a contradiction."""
    params = settings.params(check(conninfo))
    if not params:
        return conninfo
    return psycopg.conninfo.make_conninfo(conninfo, **params)
