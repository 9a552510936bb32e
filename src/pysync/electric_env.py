"""Electric's environment variables that pysync has no use for.

Every variable of Electric's configuration page (website/docs/sync/api/config.md) is
either an alias in ``config.ENV`` (or read by ``config.from_env``) or listed here with
why it does nothing: a deployment moved from Electric keeps its environment, and
``pysync serve`` names each of these at start instead of ignoring it silently."""

from __future__ import annotations

import os
from collections.abc import Mapping

NOT_APPLICABLE: dict[str, str] = {
    "ELECTRIC_DATABASE_USE_IPV6": "libpq tries every address of the database host",
    "ELECTRIC_INSECURE": "pysync serves without a secret whenever none is set",
    "ELECTRIC_LISTEN_ON_IPV6": "pysync listens on --host / PYSYNC_HOST (:: for IPv6)",
    "ELECTRIC_TCP_SEND_TIMEOUT": "a socket option of Electric's HTTP server with no "
    "counterpart in pysync's",
    "ELECTRIC_TCP_READ_TIMEOUT": "pysync closes a connection that sends no request head "
    "within --header-timeout / PYSYNC_HEADER_TIMEOUT, kept-alive ones too",
    "ELECTRIC_SHAPE_SUSPEND_CONSUMER": "BEAM consumer processes; pysync has none",
    "ELECTRIC_SHAPE_HIBERNATE_AFTER": "BEAM consumer processes; pysync has none",
    "ELECTRIC_SHAPE_DB_EXCLUSIVE_MODE": "tunes Electric's SQLite shape metadata; pysync "
    "keeps it in files",
    "ELECTRIC_SHAPE_DB_STORAGE_DIR": "tunes Electric's SQLite shape metadata; pysync keeps "
    "it in --storage-dir",
    "ELECTRIC_SHAPE_DB_SYNCHRONOUS": "tunes Electric's SQLite shape metadata; pysync keeps "
    "it in files",
    "ELECTRIC_SHAPE_DB_CACHE_SIZE": "tunes Electric's SQLite shape metadata; pysync keeps "
    "it in files",
    "ELECTRIC_SHAPE_DB_ENABLE_STATS": "tunes Electric's SQLite shape metadata; pysync keeps "
    "it in files",
    "ELECTRIC_SHAPE_DB_ENABLE_MEMORY_STATS": "tunes Electric's SQLite shape metadata; pysync "
    "keeps it in files",
    "ELECTRIC_CONSUMER_PARTITIONS": "BEAM supervisors; pysync has none",
    "ELECTRIC_FEATURE_FLAGS": "Electric has no feature flags for pysync to follow",
    "ELECTRIC_PERSISTENT_STATE": "pysync keeps shape metadata in --storage-dir",
    "ELECTRIC_STORAGE": "pysync serve keeps shape logs in files (an embedded Sync can "
    "keep them in memory)",
    "ELECTRIC_HNY_API_KEY": "give Honeycomb's header to the OpenTelemetry exporter as "
    "OTEL_EXPORTER_OTLP_HEADERS=x-honeycomb-team=<key>",
    "ELECTRIC_HNY_DATASET": "give Honeycomb's header to the OpenTelemetry exporter as "
    "OTEL_EXPORTER_OTLP_HEADERS=x-honeycomb-dataset=<name>",
    "ELECTRIC_STATSD_HOST": "pysync sends nothing to StatsD",
    "SENTRY_DSN": "pysync reports nothing to Sentry (errors are in its log)",
    "ELECTRIC_LOG_COLORS": "pysync's log has no colours",
    "ELECTRIC_LOG_OTP_REPORTS": "BEAM (OTP) reports; pysync has none",
}
"""Variable -> why pysync does nothing with it (the notice's reason)."""


def notices(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line for each variable of NOT_APPLICABLE that is set (even to "")."""
    env = os.environ if environ is None else environ
    return [
        f"{name} is set but has no effect in pysync: {reason}"
        for name, reason in NOT_APPLICABLE.items()
        if name in env
    ]
