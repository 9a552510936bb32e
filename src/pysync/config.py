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

from pysync.log.log import CHUNK_BYTES, COMPACT_MIN_BYTES
from pysync.postgres.conninfo import ConnectionSettings, UnparsableConninfo, merge
from pysync.postgres.conninfo import check as check_conninfo
from pysync.postgres.slot import MAX_RANDOM_BASE
from pysync.shapes.drift import SCHEMA_CHECK_INTERVAL
from pysync.shapes.subqueries.manager import MAX_ROWS as MAX_SUBQUERY_ROWS

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
Duration = Annotated[float, msgspec.Meta(gt=0)]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class Settings(msgspec.Struct, kw_only=True):
    database_url: str | None = None
    """Replicate from this server; None starts the private Postgres in ``data_dir``."""
    pooled_database_url: str | None = None
    """Catalog work and snapshots go through this one (a transaction pooler such as
    PgBouncer in front of ``database_url``'s server); replication stays on ``database_url``."""
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
    database_ca_certificate_file: Path | None = None
    """Verify the database server's certificate and host name with these trusted root
    certificates (libpq ``sslrootcert`` with ``sslmode=verify-full``)."""
    database_tcp_keepalive_idle: Duration | None = None
    """Seconds a database connection may idle before TCP keepalive probes (whole seconds)."""
    database_tcp_keepalive_interval: Duration | None = None
    """Seconds between TCP keepalive probes (whole seconds)."""
    database_tcp_keepalive_count: Positive | None = None
    """Unanswered TCP keepalive probes before a database connection is dropped."""
    database_tcp_user_timeout: Duration | None = None
    """Seconds data sent to the database may stay unacknowledged (``TCP_USER_TIMEOUT``)."""
    temporary_slot: bool = False
    """Replicate from a temporary slot, which Postgres drops when the replication
    connection closes (Electric's ``CLEANUP_REPLICATION_SLOTS_ON_SHUTDOWN``): every start
    or reconnect makes a new slot, and the shapes of the last one are resynced."""
    random_slot_name: bool = False
    """With ``temporary_slot``: name the slot ``<slot>_<16 random hex digits>``, so that
    instances sharing a database never take each other's slot (Electric's
    ``ELECTRIC_TEMPORARY_REPLICATION_SLOT_USE_RANDOM_NAME``)."""
    replication_idle_timeout: Seconds = 0.0
    """Close every database connection after this many seconds without a transaction
    or a shape request; the next shape request reopens them (0: never). Electric's
    ``ELECTRIC_REPLICATION_IDLE_TIMEOUT``."""
    otlp_endpoint: str | None = None
    """Export OpenTelemetry traces to this collector (``<endpoint>/v1/traces``); needs
    ``pysync[otel]`` (``pysync.tracing``)."""
    otel_debug: bool = False
    """Also print each span to stdout."""
    service_name: str = "pysync"
    """The traces' ``service.name``."""
    instance_id: str | None = None
    """The traces' ``service.instance.id``; default: a random UUID per process."""

    @property
    def shape_storage(self) -> Path:
        return self.storage_dir or self.data_dir / "storage"

    @property
    def connection(self) -> ConnectionSettings:
        """What every connection to ``database_url``'s server takes (``conninfo.merge``)."""
        ca_file = self.database_ca_certificate_file
        return ConnectionSettings(
            ca_certificate_file=None if ca_file is None else str(ca_file),
            keepalive_idle=self.database_tcp_keepalive_idle,
            keepalive_interval=self.database_tcp_keepalive_interval,
            keepalive_count=self.database_tcp_keepalive_count,
            user_timeout=self.database_tcp_user_timeout,
        )

    def conninfo(self, database_url: str) -> str:
        """``database_url`` with the connection settings: what to connect with."""
        return merge(database_url, self.connection)

    def pooled_conninfo(self) -> str | None:
        """The pooled URL with the connection settings, when one is given."""
        url = self.pooled_database_url
        return None if url is None else merge(url, self.connection)


ENV: dict[str, tuple[str, ...]] = {
    "database_url": ("DATABASE_URL", "PYSYNC_DATABASE_URL"),
    "pooled_database_url": (
        "PYSYNC_POOLED_DATABASE_URL",
        "ELECTRIC_POOLED_DATABASE_URL",
        "ELECTRIC_QUERY_DATABASE_URL",  # Electric's deprecated name, which it still reads
    ),
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
    "database_ca_certificate_file": (
        "PYSYNC_DATABASE_CA_CERTIFICATE_FILE",
        "ELECTRIC_DATABASE_CA_CERTIFICATE_FILE",
    ),
    "database_tcp_keepalive_idle": (
        "PYSYNC_DATABASE_TCP_KEEPALIVE_IDLE",
        "ELECTRIC_DATABASE_TCP_KEEPALIVE_IDLE",
    ),
    "database_tcp_keepalive_interval": (
        "PYSYNC_DATABASE_TCP_KEEPALIVE_INTERVAL",
        "ELECTRIC_DATABASE_TCP_KEEPALIVE_INTERVAL",
    ),
    "database_tcp_keepalive_count": (
        "PYSYNC_DATABASE_TCP_KEEPALIVE_COUNT",
        "ELECTRIC_DATABASE_TCP_KEEPALIVE_COUNT",
    ),
    "database_tcp_user_timeout": (
        "PYSYNC_DATABASE_TCP_USER_TIMEOUT",
        "ELECTRIC_DATABASE_TCP_USER_TIMEOUT",
    ),
    "temporary_slot": ("PYSYNC_TEMPORARY_SLOT", "CLEANUP_REPLICATION_SLOTS_ON_SHUTDOWN"),
    "random_slot_name": (
        "PYSYNC_RANDOM_SLOT_NAME",
        "ELECTRIC_TEMPORARY_REPLICATION_SLOT_USE_RANDOM_NAME",
    ),
    "replication_idle_timeout": (
        "PYSYNC_REPLICATION_IDLE_TIMEOUT",
        "ELECTRIC_REPLICATION_IDLE_TIMEOUT",
    ),
    "otlp_endpoint": ("PYSYNC_OTLP_ENDPOINT", "ELECTRIC_OTLP_ENDPOINT"),
    "otel_debug": ("PYSYNC_OTEL_DEBUG", "ELECTRIC_OTEL_DEBUG"),
    "service_name": ("PYSYNC_SERVICE_NAME", "ELECTRIC_SERVICE_NAME"),
    "instance_id": ("PYSYNC_INSTANCE_ID", "ELECTRIC_INSTANCE_ID"),
}

_CONNECTION_DURATIONS = (
    "database_tcp_keepalive_idle",
    "database_tcp_keepalive_interval",
    "database_tcp_user_timeout",
)
DURATIONS = (*_CONNECTION_DURATIONS, "replication_idle_timeout")
"""Settings that take a unit (``30s``, ``500ms``, ``2min``); a bare number is seconds,
but milliseconds from an ``ELECTRIC_*`` variable (as Electric reads it)."""
_ZERO_IS_OFF = frozenset({"replication_idle_timeout"})
CONNECTION_FIELDS = (
    "database_ca_certificate_file",
    "database_tcp_keepalive_count",
    *_CONNECTION_DURATIONS,
)


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
                value = env[name]
                if field in DURATIONS and name.startswith("ELECTRIC_"):
                    # Electric's unit: a bare number is milliseconds.
                    match = _DURATION.fullmatch(value)
                    if match is not None and match[2] is None:
                        value = f"{match[1]}ms"
                found[field] = value
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


def env_name(env: Mapping[str, str], field: str) -> str | None:
    """The variable ``field`` is read from (the first of its names that is set)."""
    return next((name for name in ENV[field] if env.get(name)), None)


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


def connection_from_env(environ: Mapping[str, str] | None = None) -> ConnectionSettings:
    """The connection settings of the environment alone, for what connects without the
    rest of the settings (``Writer``, ``pysync uninstall``, ``pysync bench``)."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    origins: dict[str, str] = {}
    for field in CONNECTION_FIELDS:
        name = next((name for name in ENV[field] if env.get(name)), None)
        if name is not None:
            values[field], origins[field] = env[name], name
    return make_settings(values, origins).connection


def make_settings(values: dict[str, object], origins: Mapping[str, str] | None = None) -> Settings:
    """``Settings`` from strings or values; SettingsError names a bad one as ``origins``
    says where it came from (``--port``, ``PYSYNC_PORT``), else by its field name."""
    names = origins or {}
    values = {**values, **_durations(values, names)}
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
    if settings.database_ca_certificate_file is not None:
        # Absolute: libpq reads it at each connect, HTTP workers too.
        settings = msgspec.structs.replace(
            settings, database_ca_certificate_file=settings.database_ca_certificate_file.absolute()
        )
    return settings


_DURATION = re.compile(
    r"\s*((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(ms|msec|s|sec|m|min)?\s*", re.ASCII
)
_UNITS = {"ms": 0.001, "msec": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0}


def duration(text: str, bare: str = "s") -> float:
    """Seconds in ``text``: a number with a unit as Electric writes them (``500ms``,
    ``30s``, ``5min``), or a bare number in ``bare`` units."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError("expected a duration such as 30s, 500ms or 5min")
    return float(match[1]) * _UNITS[match[2] or bare]


def _durations(values: Mapping[str, object], names: Mapping[str, str]) -> dict[str, object]:
    """The duration settings given as text (``30s``, ``500ms``, ``2min``, ``30``) in
    seconds; a bare number from an ``ELECTRIC_*`` variable is milliseconds, as Electric
    reads it, else seconds, as every other duration of pysync."""
    found: dict[str, object] = {}
    for field in DURATIONS:
        value = values.get(field)
        if not isinstance(value, str):
            continue
        name = names.get(field, field)
        electric = name.startswith("ELECTRIC_")
        zero = field in _ZERO_IS_OFF
        try:
            seconds = duration(value, "ms" if electric else "s")
        except ValueError:
            seconds = -1.0
        if seconds < 0 or (seconds == 0 and not zero):
            raise SettingsError(
                f"invalid {name} {value!r}: expected a duration {'of 0 (off) or more' if zero else 'above 0'} "
                f"such as 30s, 500ms or 2min (a bare number is "
                f"{'milliseconds' if electric else 'seconds'})"
            )
        found[field] = seconds
    return found


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
_SECRET_FIELDS = ("secret", "database_url", "pooled_database_url")
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


_CA = "database_ca_certificate_file"


def _check(settings: Settings, names: Mapping[str, str]) -> None:
    """What the types do not say: each failure would otherwise surface at start-up,
    as a traceback."""
    given = msgspec.structs.asdict(settings)

    def fail(field: str, reason: str) -> SettingsError:
        return SettingsError(f"{_named(field, given[field], names)}: {reason}")

    for field in ("database_url", "pooled_database_url"):
        url = given[field]
        if url is None:
            continue
        try:
            check_conninfo(url)
        except UnparsableConninfo as exc:
            raise fail(
                field,
                f"{exc}; expected postgresql://user@host:port/dbname or 'host=... dbname=...'",
            ) from None
        except ValueError as exc:
            raise fail(field, str(exc)) from None
        try:
            merge(url, settings.connection)
        except ValueError as exc:
            raise fail(field, f"{exc} ({names.get(_CA, _CA)}): give one") from None
    if settings.pooled_database_url is not None and settings.database_url is None:
        raise fail(
            "pooled_database_url",
            "it needs the database's own URL too (--database-url / DATABASE_URL), for replication",
        )
    ca_file = settings.database_ca_certificate_file
    if ca_file is not None:
        try:
            with ca_file.open("rb"):
                pass
        except OSError as exc:
            raise fail(_CA, f"cannot read it: {exc.strerror}") from None
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
    random_name = settings.random_slot_name and settings.temporary_slot
    if random_name and len(settings.slot) > MAX_RANDOM_BASE:
        raise fail(
            "slot",
            f"a random slot name adds 17 characters: at most {MAX_RANDOM_BASE} are left for this one",
        )
    if settings.replication_idle_timeout and settings.workers:
        timeout, workers = (
            names.get(field, field) for field in ("replication_idle_timeout", "workers")
        )
        raise SettingsError(
            f"{timeout} cannot be used with HTTP workers ({workers}): they answer requests "
            "the replicating process does not see, so it cannot tell when it is idle; "
            "give one or the other"
        )
    if settings.otlp_endpoint is not None and not re.match(
        r"https?://[^/\s]+", settings.otlp_endpoint
    ):
        # Else every export would fail later, each time in a log line.
        raise fail("otlp_endpoint", "expected the collector's URL, e.g. http://localhost:4318")


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
