"""Settings from the environment, and as the supervisor hands them to its workers."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import pysync
from pysync.cli import parse, settings_from
from pysync.config import ENV, STREAM_ID, SettingsError, env_origins, from_env, make_settings
from pysync.electric_env import NOT_APPLICABLE, notices


def test_directories_and_workers_from_the_environment() -> None:
    settings = make_settings(
        from_env(
            {
                "PYSYNC_DATA_DIR": "/srv/pysync",
                "PYSYNC_STORAGE_DIR": "/var/lib/shapes",
                "PYSYNC_WORKERS": "3",
            }
        )
    )
    assert settings.data_dir == Path("/srv/pysync")
    assert settings.shape_storage == Path("/var/lib/shapes")
    assert settings.workers == 3


def test_settings_survive_the_trip_to_a_worker() -> None:
    settings = make_settings(
        {"database_url": "postgresql://x/y", "data_dir": Path("/d"), "port": 4000}
    )
    encoded = msgspec.json.encode(settings, enc_hook=str)  # as serve/supervisor.py sends them
    assert make_settings(msgspec.json.decode(encoded)) == settings


def test_the_secret_from_a_file(tmp_path: Path) -> None:
    """Not on the command line, where every local user reads it (ps): from a file."""
    path = tmp_path / "secret"
    path.write_text("s3cret-from-file\n")
    settings = make_settings(from_env({"PYSYNC_SECRET_FILE": str(path)}))
    assert settings.secret == "s3cret-from-file" and settings.secret_file is None
    assert make_settings({"secret_file": path}).secret == "s3cret-from-file"
    # Read once: a worker gets the secret itself, not the file's name to read again.
    encoded = msgspec.json.encode(settings, enc_hook=str)
    assert make_settings(msgspec.json.decode(encoded)) == settings


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "cannot read the secret file .*: No such file or directory"),
        ("empty", "the secret file .* is empty"),
        ("both", "both a secret and a secret file are given"),
    ],
)
def test_a_secret_file_that_cannot_be_used(tmp_path: Path, case: str, message: str) -> None:
    path = tmp_path / "secret"
    values: dict[str, object] = {"secret_file": path}
    if case == "empty":
        path.write_text("\n")
    if case == "both":
        path.write_text("a\n")
        values["secret"] = "b"
    with pytest.raises(SettingsError, match=message):
        make_settings(values)


def test_schema_check_interval_from_the_environment_and_checked() -> None:
    settings = make_settings(from_env({"PYSYNC_SCHEMA_CHECK_INTERVAL": "2.5"}))
    assert settings.schema_check_interval == 2.5
    with pytest.raises(SettingsError, match="schema_check_interval"):
        make_settings({"schema_check_interval": "-1"})


def test_an_embedded_sync_names_the_variable_or_argument_of_a_bad_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYSYNC_PORT", "abc")
    with pytest.raises(SettingsError) as env_error:
        pysync.Sync()
    assert str(env_error.value) == "invalid PYSYNC_PORT 'abc': expected an integer"
    with pytest.raises(SettingsError) as argument_error:
        pysync.Sync(port=70000)  # the argument wins over the variable, and is named
    assert str(argument_error.value) == "invalid port '70000': expected an integer <= 65535"


ELECTRIC_PAGE = [
    "DATABASE_URL",
    "ELECTRIC_POOLED_DATABASE_URL",
    "ELECTRIC_DATABASE_USE_IPV6",
    "ELECTRIC_DB_POOL_SIZE",
    "ELECTRIC_DATABASE_TCP_KEEPALIVE_IDLE",
    "ELECTRIC_DATABASE_TCP_KEEPALIVE_INTERVAL",
    "ELECTRIC_DATABASE_TCP_KEEPALIVE_COUNT",
    "ELECTRIC_DATABASE_TCP_USER_TIMEOUT",
    "ELECTRIC_DATABASE_CA_CERTIFICATE_FILE",
    "ELECTRIC_REPLICATION_STREAM_ID",
    "CLEANUP_REPLICATION_SLOTS_ON_SHUTDOWN",
    "ELECTRIC_TEMPORARY_REPLICATION_SLOT_USE_RANDOM_NAME",
    "ELECTRIC_REPLICATION_IDLE_TIMEOUT",
    "ELECTRIC_MANUAL_TABLE_PUBLISHING",
    "ELECTRIC_SECRET",
    "ELECTRIC_INSECURE",
    "ELECTRIC_INSTANCE_ID",
    "ELECTRIC_SERVICE_NAME",
    "ELECTRIC_LISTEN_ON_IPV6",
    "ELECTRIC_TCP_SEND_TIMEOUT",
    "ELECTRIC_TCP_READ_TIMEOUT",
    "ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD",
    "ELECTRIC_PORT",
    "ELECTRIC_SHAPE_SUSPEND_CONSUMER",
    "ELECTRIC_SHAPE_HIBERNATE_AFTER",
    "ELECTRIC_SHAPE_DB_EXCLUSIVE_MODE",
    "ELECTRIC_SHAPE_DB_STORAGE_DIR",
    "ELECTRIC_SHAPE_DB_SYNCHRONOUS",
    "ELECTRIC_SHAPE_DB_CACHE_SIZE",
    "ELECTRIC_SHAPE_DB_ENABLE_STATS",
    "ELECTRIC_SHAPE_DB_ENABLE_MEMORY_STATS",
    "ELECTRIC_MAX_CONCURRENT_REQUESTS",
    "ELECTRIC_MAX_SHAPES",
    "ELECTRIC_CONSUMER_PARTITIONS",
    "ELECTRIC_FEATURE_FLAGS",
    "ELECTRIC_CACHE_MAX_AGE",
    "ELECTRIC_CACHE_STALE_AGE",
    "ELECTRIC_PERSISTENT_STATE",
    "ELECTRIC_STORAGE",
    "ELECTRIC_STORAGE_DIR",
    "ELECTRIC_OTLP_ENDPOINT",
    "ELECTRIC_OTEL_DEBUG",
    "ELECTRIC_HNY_API_KEY",
    "ELECTRIC_HNY_DATASET",
    "ELECTRIC_PROMETHEUS_PORT",
    "ELECTRIC_STATSD_HOST",
    "SENTRY_DSN",
    "ELECTRIC_LOG_LEVEL",
    "ELECTRIC_LOG_COLORS",
    "ELECTRIC_LOG_OTP_REPORTS",
]
"""Every variable of Electric's configuration page (website/docs/sync/api/config.md)."""
READ_BY_FROM_ENV = {"ELECTRIC_MAX_CONCURRENT_REQUESTS", STREAM_ID}


def test_every_electric_variable_is_honoured_or_noticed_and_documented() -> None:
    honoured = {name for names in ENV.values() for name in names} | READ_BY_FROM_ENV
    for name in ELECTRIC_PAGE:
        assert (name in honoured) != (name in NOT_APPLICABLE), name
    table = (Path(__file__).parent.parent / "docs" / "operations.md").read_text()
    assert [name for name in ELECTRIC_PAGE if f"`{name}`" not in table] == []
    # Each set variable without effect is one line naming it, and none crashes a start.
    env = {name: "x" for name in NOT_APPLICABLE}
    lines = notices(env)
    assert len(lines) == len(NOT_APPLICABLE)
    assert [line.split()[0] for line in lines] == list(NOT_APPLICABLE)
    make_settings(from_env(env))
    assert notices({"ELECTRIC_PORT": "3000", "PYSYNC_PORT": "1"}) == []


def test_electric_aliases_set_the_right_settings() -> None:
    env = {
        "DATABASE_URL": "postgresql://db/app",
        "ELECTRIC_PORT": "4000",
        "ELECTRIC_SECRET": "s",
        "ELECTRIC_DB_POOL_SIZE": "7",
        "ELECTRIC_MANUAL_TABLE_PUBLISHING": "true",
        "ELECTRIC_REPLICATION_STREAM_ID": "MyApp",
        "ELECTRIC_EXPERIMENTAL_MAX_SHAPES": "50",
        "ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD": "4096",
        "ELECTRIC_MAX_CONCURRENT_REQUESTS": '{"initial": 3, "existing": 4}',
        "ELECTRIC_CACHE_MAX_AGE": "5",
        "ELECTRIC_CACHE_STALE_AGE": "6",
        "ELECTRIC_STORAGE_DIR": "/var/shapes",
        "ELECTRIC_LOG_LEVEL": "debug",
    }
    settings = make_settings(from_env(env))
    assert (settings.database_url, settings.port, settings.secret) == (
        "postgresql://db/app",
        4000,
        "s",
    )
    assert settings.snapshot_connections == 7 and settings.manual_publishing is True
    assert (settings.slot, settings.publication) == ("pysync_myapp", "pysync_myapp")
    assert settings.max_shapes == 50 and settings.chunk_bytes == 4096
    assert (settings.max_initial_requests, settings.max_existing_requests) == (3, 4)
    assert (settings.cache_max_age, settings.cache_stale_age) == (5, 6)
    assert settings.shape_storage == Path("/var/shapes") and settings.log_level == "debug"
    # pysync's own names win.
    mine = make_settings(
        from_env({**env, "PYSYNC_SLOT": "mine", "PYSYNC_MANUAL_PUBLISHING": "false"})
    )
    assert (mine.slot, mine.publication, mine.manual_publishing) == ("mine", "pysync_myapp", False)


def test_a_bad_stream_id_names_its_variable() -> None:
    env = {"ELECTRIC_REPLICATION_STREAM_ID": "my-app"}
    with pytest.raises(
        SettingsError, match="^invalid ELECTRIC_REPLICATION_STREAM_ID 'pysync_my-app'"
    ):
        make_settings(from_env(env), env_origins(env))


def test_manual_publishing_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYSYNC_MANUAL_PUBLISHING", raising=False)
    monkeypatch.setenv("ELECTRIC_MANUAL_TABLE_PUBLISHING", "false")
    assert settings_from(parse(["serve"])).manual_publishing is False
    assert settings_from(parse(["serve", "--manual-publishing"])).manual_publishing is True


def test_pooled_database_url_from_its_names_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"DATABASE_URL": "postgresql://db/app"}
    for name in ("ELECTRIC_QUERY_DATABASE_URL", "ELECTRIC_POOLED_DATABASE_URL"):
        settings = make_settings(from_env({**base, name: "postgresql://bouncer:6432/app"}))
        assert settings.pooled_database_url == "postgresql://bouncer:6432/app"
        assert notices({name: "postgresql://bouncer:6432/app"}) == []
    # pysync's name, then Electric's, then its deprecated one.
    env = {
        **base,
        "ELECTRIC_QUERY_DATABASE_URL": "postgresql://old/app",
        "ELECTRIC_POOLED_DATABASE_URL": "postgresql://electric/app",
    }
    assert make_settings(from_env(env)).pooled_database_url == "postgresql://electric/app"
    env["PYSYNC_POOLED_DATABASE_URL"] = "postgresql://mine/app"
    assert make_settings(from_env(env)).pooled_database_url == "postgresql://mine/app"
    for name in ENV["pooled_database_url"]:
        monkeypatch.delenv(name, raising=False)
    flag = ["serve", "--database-url", "postgresql://db/app"]
    parsed = settings_from(parse([*flag, "--pooled-database-url", "postgresql://flag/app"]))
    assert parsed.pooled_database_url == "postgresql://flag/app"
    # A bad one is named, its password never repeated; replication needs DATABASE_URL.
    bad = {**base, "ELECTRIC_POOLED_DATABASE_URL": "postgresql://u:hunter2@h/app?nosuch=1"}
    with pytest.raises(SettingsError, match="^invalid ELECTRIC_POOLED_DATABASE_URL: ") as error:
        make_settings(from_env(bad), env_origins(bad))
    assert "hunter2" not in str(error.value)
    alone = {"PYSYNC_POOLED_DATABASE_URL": "postgresql://bouncer/app"}
    with pytest.raises(SettingsError, match="needs the database's own URL too"):
        make_settings(from_env(alone), env_origins(alone))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:hunter2%zzsecret@h/app",  # libpq: invalid percent-encoded token
        "postgresql://u:hunter2secret%@h/app",
        "postgresql://u@h/app?password=hunter2%zzsecret",
        "host=h user=u password=hunter2 secret dbname=app",  # missing "=" after "secret"
        "host=h password='hunter2secret",  # unterminated quoted string
    ],
)
def test_an_unparsable_database_url_never_repeats_its_password(url: str) -> None:
    """libpq's message about a URL it cannot parse quotes the token it choked on, and
    that can be (a piece of) the password: the message is shown, the token is not."""
    for names in ({"DATABASE_URL": url}, {"PYSYNC_POOLED_DATABASE_URL": url}):
        env = {"DATABASE_URL": "postgresql://db/app", **names}
        with pytest.raises(SettingsError, match="^invalid ") as error:
            make_settings(from_env(env), env_origins(env))
        message = str(error.value)
        assert "hunter2" not in message and "secret" not in message, message
        assert "expected postgresql://" in message  # still says what is wrong
