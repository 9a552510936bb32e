"""Settings of ``pysync serve`` (and of an embedded ``Sync``): one typed object, from
CLI flags or environment variables (``PYSYNC_*``, with Electric's ``ELECTRIC_*`` names
as aliases where Electric has the setting)."""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import msgspec
import psycopg

from pysync.log.log import CHUNK_BYTES, COMPACT_MIN_BYTES
from pysync.shapes.drift import SCHEMA_CHECK_INTERVAL
from pysync.shapes.subqueries.manager import MAX_ROWS as MAX_SUBQUERY_ROWS

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class Settings(msgspec.Struct, kw_only=True):
    database_url: str | None = None
    """Replicate from this server; None starts the private Postgres in ``data_dir``."""
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 3000
    secret: str | None = None
    secret_file: Path | None = None
    """A file holding ``secret`` (its first line), read once when the settings are made:
    a secret on the command line is readable by every local user (``ps``)."""
    data_dir: Path = Path(".pysync")
    storage_dir: Path | None = None
    """Shape logs; default ``<data_dir>/storage``."""
    long_poll_timeout: Seconds = 20.0
    publication: str = "pysync"
    slot: str = "pysync"
    log_level: str = "info"
    allow_delete: bool = False
    max_shapes: Positive | None = None
    max_subquery_rows: NonNegative = MAX_SUBQUERY_ROWS
    """Rows the subqueries of all shapes may hold in memory (about 1 KiB each)."""
    chunk_bytes: Positive = CHUNK_BYTES
    """About this many bytes per snapshot chunk and per response."""
    cache_max_age: NonNegative = 60
    """``max-age`` of non-live responses (seconds)."""
    cache_stale_age: NonNegative = 300
    """``stale-while-revalidate`` of non-live responses (seconds)."""
    max_initial_requests: Positive = 300
    """Concurrent requests for shapes that do not exist yet (their snapshots)."""
    max_existing_requests: Positive = 10_000
    """Concurrent other shape requests (live ones included)."""
    max_connections: Positive | None = None
    """Client connections at once; default: what the open-files limit allows."""
    header_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """Seconds a connection may take to send a request's head."""
    snapshot_connections: Positive = 5
    """Postgres sessions for snapshots and subsets at once."""
    workers: NonNegative = 0
    """HTTP worker processes beside the replicating one (0: it serves HTTP itself)."""
    compaction: bool = True
    """Merge each row's updates in shape logs once they doubled in size."""
    compact_min_bytes: NonNegative = COMPACT_MIN_BYTES
    """A log is compacted once it grew by at least this much."""
    schema_check_interval: Seconds = SCHEMA_CHECK_INTERVAL
    """Seconds between catalog checks of the shapes' tables (0: none)."""
    manual_publishing: bool = False
    """Never alter the publication or a table's replica identity: a database owner
    publishes each table and sets it ``REPLICA IDENTITY FULL``."""
    prometheus_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    """Also serve ``/metrics`` on this port of ``host`` (Electric's ``ELECTRIC_PROMETHEUS_PORT``)."""

    @property
    def shape_storage(self) -> Path:
        return self.storage_dir or self.data_dir / "storage"


ENV: dict[str, tuple[str, ...]] = {
    "database_url": ("DATABASE_URL", "PYSYNC_DATABASE_URL"),
    "host": ("PYSYNC_HOST",),
    "port": ("PYSYNC_PORT", "ELECTRIC_PORT", "PORT"),
    "secret": ("PYSYNC_SECRET", "ELECTRIC_SECRET"),
    "secret_file": ("PYSYNC_SECRET_FILE",),
    "data_dir": ("PYSYNC_DATA_DIR",),
    "storage_dir": ("PYSYNC_STORAGE_DIR", "ELECTRIC_STORAGE_DIR"),
    "long_poll_timeout": ("PYSYNC_LONG_POLL_TIMEOUT",),
    "publication": ("PYSYNC_PUBLICATION",),
    "slot": ("PYSYNC_SLOT",),
    "log_level": ("PYSYNC_LOG_LEVEL", "ELECTRIC_LOG_LEVEL"),
    "allow_delete": ("PYSYNC_ALLOW_DELETE", "ELECTRIC_ENABLE_INTEGRATION_TESTING"),
    "max_shapes": ("PYSYNC_MAX_SHAPES", "ELECTRIC_MAX_SHAPES", "ELECTRIC_EXPERIMENTAL_MAX_SHAPES"),
    "max_subquery_rows": ("PYSYNC_MAX_SUBQUERY_ROWS",),
    "chunk_bytes": ("PYSYNC_CHUNK_BYTES", "ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD"),
    "cache_max_age": ("PYSYNC_CACHE_MAX_AGE", "ELECTRIC_CACHE_MAX_AGE"),
    "cache_stale_age": ("PYSYNC_CACHE_STALE_AGE", "ELECTRIC_CACHE_STALE_AGE"),
    "max_initial_requests": ("PYSYNC_MAX_INITIAL_REQUESTS",),
    "max_existing_requests": ("PYSYNC_MAX_EXISTING_REQUESTS",),
    "max_connections": ("PYSYNC_MAX_CONNECTIONS",),
    "header_timeout": ("PYSYNC_HEADER_TIMEOUT",),
    "snapshot_connections": ("PYSYNC_SNAPSHOT_CONNECTIONS", "ELECTRIC_DB_POOL_SIZE"),
    "workers": ("PYSYNC_WORKERS",),
    "compaction": ("PYSYNC_COMPACTION",),
    "compact_min_bytes": ("PYSYNC_COMPACT_MIN_BYTES",),
    "schema_check_interval": ("PYSYNC_SCHEMA_CHECK_INTERVAL",),
    "manual_publishing": ("PYSYNC_MANUAL_PUBLISHING", "ELECTRIC_MANUAL_TABLE_PUBLISHING"),
    "prometheus_port": ("PYSYNC_PROMETHEUS_PORT", "ELECTRIC_PROMETHEUS_PORT"),
}


_ASCII_DOWNCASE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
STREAM_ID = "ELECTRIC_REPLICATION_STREAM_ID"
"""Sets ``slot`` and ``publication`` to ``pysync_<id>`` (unless they are given)."""


class SettingsError(ValueError):
    """A setting that cannot be used; the message names it."""


def from_env(environ: dict[str, str] | None = None) -> dict[str, object]:
    """Settings given by environment variables (the first variable of each name wins)."""
    env = os.environ if environ is None else environ
    found: dict[str, object] = {}
    for field, names in ENV.items():
        for name in names:
            if env.get(name):
                found[field] = env[name]
                break
    limits = env.get("ELECTRIC_MAX_CONCURRENT_REQUESTS")
    if limits:
        # Electric's JSON form: {"initial": 300, "existing": 10000}
        try:
            parsed = msgspec.json.decode(limits, type=dict[str, int])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise SettingsError(
                f'ELECTRIC_MAX_CONCURRENT_REQUESTS must be JSON like {{"initial": 300, "existing": 10000}}: {exc}'
            ) from None
        if "initial" in parsed:
            found.setdefault("max_initial_requests", parsed["initial"])
        if "existing" in parsed:
            found.setdefault("max_existing_requests", parsed["existing"])
    stream = env.get(STREAM_ID)
    if stream:
        # Electric's suffix of its slot and publication names, on pysync's: separate
        # streams of one database, never Electric's own slot.
        # (Electric reads it as an unquoted identifier: ASCII letters down-cased.)
        name = f"pysync_{stream.translate(_ASCII_DOWNCASE)}"
        found.setdefault("slot", name)
        found.setdefault("publication", name)
    return found


def env_origins(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variable each setting of ``from_env`` came from, for messages."""
    env = os.environ if environ is None else environ
    origins = {
        field: next(name for name in names if env.get(name))
        for field, names in ENV.items()
        if any(env.get(name) for name in names)
    }
    if env.get("ELECTRIC_MAX_CONCURRENT_REQUESTS"):
        for field in ("max_initial_requests", "max_existing_requests"):
            origins.setdefault(field, "ELECTRIC_MAX_CONCURRENT_REQUESTS")
    if env.get(STREAM_ID):
        for field in ("slot", "publication"):
            origins.setdefault(field, STREAM_ID)
    return origins


def make_settings(values: dict[str, object], origins: Mapping[str, str] | None = None) -> Settings:
    """``Settings`` from strings or values; SettingsError names a bad one as ``origins``
    says where it came from (``--port``, ``PYSYNC_PORT``), else by its field name."""
    names = origins or {}
    try:
        settings = msgspec.convert(values, Settings, strict=False, dec_hook=_decode)
    except msgspec.ValidationError as exc:
        raise SettingsError(_invalid(str(exc), values, names)) from None
    _check(settings, names)
    if settings.secret_file is not None:
        if settings.secret is not None:
            raise SettingsError(
                "both a secret and a secret file are given (--secret / PYSYNC_SECRET / "
                "ELECTRIC_SECRET and --secret-file / PYSYNC_SECRET_FILE): give one"
            )
        settings = msgspec.structs.replace(
            settings, secret=read_secret(settings.secret_file), secret_file=None
        )
    return settings


_AT_FIELD = re.compile(r" - at `\$\.(\w+)`$")
_KINDS = {
    "`int | null`": "an integer",
    "`float | null`": "a number",
    "`int`": "an integer",
    "`float`": "a number",
    "`bool`": "true or false",
    "`str | null`": "text",
    "`str`": "text",
}
_SECRET_FIELDS = ("secret", "database_url")
"""Not repeated in messages: they may hold a password."""


def _invalid(message: str, values: Mapping[str, object], names: Mapping[str, str]) -> str:
    """msgspec's ``Expected `int` >= 1 - at `$.workers``` as ``invalid --workers '-1':
    expected an integer >= 1``."""
    at = _AT_FIELD.search(message)
    if at is None:
        return f"invalid setting: {message}"
    field = at[1]
    reason = message[: at.start()]
    reason = re.sub(r", got `[^`]*`$", "", reason)
    for kind, plain in _KINDS.items():
        reason = reason.replace(kind, plain)
    reason = reason[:1].lower() + reason[1:]
    return f"{_named(field, values.get(field), names)}: {reason}"


def _named(field: str, value: object, names: Mapping[str, str]) -> str:
    name = names.get(field, field)
    if field in _SECRET_FIELDS or value is None:
        return f"invalid {name}"
    return f"invalid {name} {str(value)!r}"


def _check(settings: Settings, names: Mapping[str, str]) -> None:
    """What the types do not say: each failure would otherwise surface at start-up,
    as a traceback."""
    given = msgspec.structs.asdict(settings)

    def fail(field: str, reason: str) -> SettingsError:
        return SettingsError(f"{_named(field, given[field], names)}: {reason}")

    if settings.database_url is not None:
        try:
            psycopg.conninfo.conninfo_to_dict(settings.database_url)
        except psycopg.ProgrammingError as exc:
            reason = str(exc).strip().replace("\n", " ")
            raise fail(
                "database_url",
                f"{reason}; expected postgresql://user@host:port/dbname or 'host=... dbname=...'",
            ) from None
    if settings.log_level.lower() not in LOG_LEVELS:
        raise fail("log_level", f"expected one of {', '.join(LOG_LEVELS)}")
    if not re.fullmatch(r"[a-z0-9_]{1,63}", settings.slot):
        raise fail("slot", "a replication slot name is 1 to 63 lower-case letters, digits or '_'")
    if not 0 < len(settings.publication.encode()) < 64:
        raise fail("publication", "a publication name is 1 to 63 bytes")
    if settings.secret == "":
        raise fail("secret", "the secret is empty; leave it out to serve without one")
    if not settings.host:
        raise fail("host", "expected an interface's address or name, e.g. 127.0.0.1")
    if settings.prometheus_port == settings.port:
        raise fail("prometheus_port", "the port of the shape API; give another one")


def read_secret(path: Path) -> str:
    """The first line of ``path``, without its line end; SettingsError if there is none."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise SettingsError(f"cannot read the secret file {path}: {reason}") from None
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise SettingsError(f"the secret file {path} is empty")
    return secret


def _decode(kind: type, value: object) -> object:
    # Paths from environment variables (PYSYNC_DATA_DIR, PYSYNC_STORAGE_DIR) are text.
    if kind is Path and isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise TypeError(f"expected a path, got {type(value).__name__}")
