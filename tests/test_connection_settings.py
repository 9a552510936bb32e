"""The connection settings (CA file, TCP keepalives, user timeout): read as Electric reads
its variables, as pysync reads its own, checked in one line, and merged into a conninfo
with the settings winning (``postgres/conninfo.py``). Their effect on real connections:
tests/test_tls.py."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from pysync.cli import main, parse, settings_from
from pysync.config import (
    SettingsError,
    connection_from_env,
    env_origins,
    from_env,
    make_settings,
)
from pysync.electric_env import notices
from pysync.postgres.conninfo import ConnectionSettings, merge


def settings_of(env: dict[str, str]) -> ConnectionSettings:
    return make_settings(from_env(env), env_origins(env)).connection


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7000", 7.0), ("250ms", 0.25), ("250 msec", 0.25), ("30s", 30.0), ("1.5min", 90.0)],
)
def test_electric_durations_are_read_as_electric_does(value: str, seconds: float) -> None:
    # Electric's parse_human_readable_time: a bare number is milliseconds.
    env = {f"ELECTRIC_DATABASE_TCP_{name}": value for name in ("KEEPALIVE_IDLE", "USER_TIMEOUT")}
    settings = settings_of(env)
    assert (settings.keepalive_idle, settings.user_timeout) == (seconds, seconds)


def test_pysync_durations_are_seconds_like_its_other_durations() -> None:
    settings = settings_of(
        {"PYSYNC_DATABASE_TCP_KEEPALIVE_INTERVAL": "10", "PYSYNC_DATABASE_TCP_USER_TIMEOUT": "2s"}
    )
    assert (settings.keepalive_interval, settings.user_timeout) == (10.0, 2.0)
    args = parse(
        [
            "serve",
            "--database-tcp-keepalive-idle",
            "30",
            "--database-tcp-keepalive-interval",
            "500ms",
            "--database-tcp-keepalive-count",
            "3",
            "--database-tcp-user-timeout",
            "1min",
        ]
    )
    assert settings_from(args).connection == ConnectionSettings(
        keepalive_idle=30.0, keepalive_interval=0.5, keepalive_count=3, user_timeout=60.0
    )
    # PYSYNC_* before ELECTRIC_*, as for every setting.
    both = {
        "PYSYNC_DATABASE_TCP_KEEPALIVE_COUNT": "2",
        "ELECTRIC_DATABASE_TCP_KEEPALIVE_COUNT": "5",
    }
    assert settings_of(both).keepalive_count == 2


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"ELECTRIC_DATABASE_TCP_KEEPALIVE_IDLE": "30x"},
            "invalid ELECTRIC_DATABASE_TCP_KEEPALIVE_IDLE '30x': expected a duration above 0 "
            "such as 30s, 500ms or 2min (a bare number is milliseconds)",
        ),
        (
            {"PYSYNC_DATABASE_TCP_USER_TIMEOUT": "0"},
            "invalid PYSYNC_DATABASE_TCP_USER_TIMEOUT '0': expected a duration above 0 "
            "such as 30s, 500ms or 2min (a bare number is seconds)",
        ),
        (
            {"ELECTRIC_DATABASE_TCP_KEEPALIVE_COUNT": "0"},
            "invalid ELECTRIC_DATABASE_TCP_KEEPALIVE_COUNT '0': expected an integer >= 1",
        ),
        (
            {"ELECTRIC_DATABASE_CA_CERTIFICATE_FILE": "/nonexistent/root.crt"},
            "invalid ELECTRIC_DATABASE_CA_CERTIFICATE_FILE '/nonexistent/root.crt': "
            "cannot read it: No such file or directory",
        ),
        (
            {"DATABASE_URL": "postgresql://u:hunter2@db/app?sslmode=verify"},
            "invalid DATABASE_URL: sslmode 'verify' is not one of disable, allow, prefer, "
            "require, verify-ca, verify-full",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_its_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as error:
        settings_of(env)
    assert str(error.value) == message


def test_sslmode_disable_with_a_ca_file_is_refused_as_electric_does(tmp_path: Path) -> None:
    ca = tmp_path / "root.crt"
    ca.write_text("not read before a connection\n")
    env = {
        "DATABASE_URL": "postgresql://u:hunter2@db/app?sslmode=disable",
        "ELECTRIC_DATABASE_CA_CERTIFICATE_FILE": str(ca),
    }
    with pytest.raises(SettingsError) as error:
        settings_of(env)
    assert str(error.value) == (
        "invalid DATABASE_URL: its sslmode=disable contradicts the CA certificate file, which "
        "asks for verified TLS (ELECTRIC_DATABASE_CA_CERTIFICATE_FILE): give one"
    )
    assert "hunter2" not in str(error.value)


def test_serve_says_a_bad_value_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(
            ["serve", "--database-url", "postgresql://db/app", "--database-tcp-user-timeout", "-1"]
        )
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "pysync: invalid --database-tcp-user-timeout '-1': expected a duration above 0 such "
        "as 30s, 500ms or 2min (a bare number is seconds)\n"
    )


def test_merge_sets_libpq_parameters_and_the_settings_win(tmp_path: Path) -> None:
    url = (
        "postgresql://u:p@db.example.com/app?sslmode=require&keepalives=0&keepalives_idle=99"
        "&sslrootcert=/old.crt&sslcert=/client.crt&sslkey=/client.key"
    )
    settings = ConnectionSettings(
        ca_certificate_file="/ca.crt",
        keepalive_idle=0.4,  # the kernel counts whole seconds, at least one (as Electric)
        keepalive_interval=10.9,
        keepalive_count=3,
        user_timeout=2.5,
    )
    merged = psycopg.conninfo.conninfo_to_dict(merge(url, settings))
    assert merged == {
        "user": "u",
        "password": "p",
        "host": "db.example.com",
        "dbname": "app",
        "sslmode": "verify-full",  # a CA file means verification, as in Electric
        "keepalives": "1",
        "keepalives_idle": "1",
        "keepalives_interval": "10",
        "keepalives_count": "3",
        "tcp_user_timeout": "2500",
        "sslrootcert": "/ca.crt",
        "sslcert": "/client.crt",  # the URL's other TLS parameters are libpq's
        "sslkey": "/client.key",
    }
    # verify-ca, asked for, is kept; nothing to add leaves the URL as it is.
    ca_only = ConnectionSettings(ca_certificate_file="/ca.crt")
    kept = psycopg.conninfo.conninfo_to_dict(merge("host=db sslmode=verify-ca", ca_only))
    assert kept["sslmode"] == "verify-ca"
    assert merge(url, ConnectionSettings()) == url
    # The user timeout alone does not touch keepalives.
    alone = merge("host=db keepalives=0", ConnectionSettings(user_timeout=1))
    assert psycopg.conninfo.conninfo_to_dict(alone)["keepalives"] == "0"


def test_the_variables_are_no_longer_noticed_as_without_effect(tmp_path: Path) -> None:
    ca = tmp_path / "root.crt"
    ca.write_text("-\n")
    env = {
        "ELECTRIC_DATABASE_CA_CERTIFICATE_FILE": str(ca),
        "ELECTRIC_DATABASE_TCP_KEEPALIVE_IDLE": "30s",
        "ELECTRIC_DATABASE_TCP_KEEPALIVE_INTERVAL": "10s",
        "ELECTRIC_DATABASE_TCP_KEEPALIVE_COUNT": "3",
        "ELECTRIC_DATABASE_TCP_USER_TIMEOUT": "60s",
    }
    assert notices(env) == []
    assert connection_from_env(env) == ConnectionSettings(str(ca), 30.0, 10.0, 3, 60.0)
