"""The first minutes with the ``pysync`` command: --version, --help, typos, bad settings
(each one line on stderr, no traceback, flag and environment alike), an unreachable
database, and ``pysync psql`` on the private Postgres."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

import pysync
from pysync.config import ENV, Settings
from pysync.postgres.cluster import free_port
from serve_process import ServeProcess, stop_leftover_postgres

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/postgres"


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any setting of pysync's."""
    names = {name for names in ENV.values() for name in names}
    names.add("ELECTRIC_MAX_CONCURRENT_REQUESTS")
    env = {k: v for k, v in os.environ.items() if k not in names}
    return {**env, **extra}


def pysync_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pysync.cli", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        cwd=cwd,
        timeout=60,
    )


def test_version() -> None:
    done = pysync_cli("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"pysync {pysync.__version__}\n", "")


def test_help_is_plain_text_and_lists_the_commands() -> None:
    done = pysync_cli("--help")
    assert done.returncode == 0, done.stderr
    assert "``" not in done.stdout, done.stdout
    assert "pysync: Postgres sync, serving Electric's Shape API" in done.stdout
    for command in ("serve", "psql", "bench"):
        assert f"\n    {command} " in done.stdout, done.stdout


def test_a_mistyped_option_gets_its_commands_usage_and_a_guess() -> None:
    done = pysync_cli("serve", "--prot", "4110")
    assert done.returncode == 2
    assert done.stderr.startswith("usage: pysync serve [-h] [--database-url DATABASE_URL]")
    assert done.stderr.splitlines()[-1] == (
        "pysync serve: error: unrecognized arguments: --prot 4110 (did you mean --port?)"
    )


DURATION = "expected a duration above 0 such as 30s, 500ms or 2min (a bare number is seconds)"
# field: (bad value, the reason after "pysync: invalid <flag or variable> '<value>': ")
BAD_VALUES: dict[str, tuple[str, str]] = {
    "database_url": (
        "not-a-url",
        'missing "=" after "not-a-url" in connection info string; expected '
        "postgresql://user@host:port/dbname or 'host=... dbname=...'",
    ),
    "pooled_database_url": (
        "not-a-url",
        'missing "=" after "not-a-url" in connection info string; expected '
        "postgresql://user@host:port/dbname or 'host=... dbname=...'",
    ),
    "port": ("70000", "expected an integer <= 65535"),
    "secret": ("", "the secret is empty; leave it out to serve without one"),
    "long_poll_timeout": ("-1", "expected a number >= 0.0"),
    "publication": ("p" * 64, "a publication name is 1 to 63 bytes"),
    "slot": ("Bad-Slot", "a replication slot name is 1 to 63 lower-case letters, digits or '_'"),
    "log_level": ("loud", "expected one of debug, info, warning, error, critical"),
    "allow_delete": ("maybe", "expected true or false"),
    "max_shapes": ("0", "expected an integer >= 1"),
    "max_subquery_rows": ("-1", "expected an integer >= 0"),
    "chunk_bytes": ("0", "expected an integer >= 1"),
    "cache_max_age": ("-1", "expected an integer >= 0"),
    "cache_stale_age": ("-1", "expected an integer >= 0"),
    "max_initial_requests": ("0", "expected an integer >= 1"),
    "max_existing_requests": ("0", "expected an integer >= 1"),
    "max_connections": ("0", "expected an integer >= 1"),
    "header_timeout": ("0", "expected a number > 0.0"),
    "snapshot_connections": ("0", "expected an integer >= 1"),
    "workers": ("-1", "expected an integer >= 0"),
    "compaction": ("maybe", "expected true or false"),
    "compact_min_bytes": ("-1", "expected an integer >= 0"),
    "schema_check_interval": ("-1", "expected a number >= 0.0"),
    "manual_publishing": ("maybe", "expected true or false"),
    "prometheus_port": ("0", "expected an integer >= 1"),
    "database_ca_certificate_file": (
        "/nonexistent/root.crt",
        "cannot read it: No such file or directory",
    ),
    "database_tcp_keepalive_idle": ("0", DURATION),
    "database_tcp_keepalive_interval": ("1h", DURATION),
    "database_tcp_keepalive_count": ("0", "expected an integer >= 1"),
    "database_tcp_user_timeout": ("-1s", DURATION),
    "temporary_slot": ("maybe", "expected true or false"),
    "random_slot_name": ("maybe", "expected true or false"),
    "replication_idle_timeout": ("soon", DURATION.replace("above 0", "of 0 (off) or more")),
    "otlp_endpoint": ("collector:4318", "expected the collector's URL, e.g. http://localhost:4318"),
    "otel_debug": ("maybe", "expected true or false"),
}
"""Settings that are checked before anything starts (exit status 2)."""

AT_START = ("host", "secret_file", "data_dir", "storage_dir")
"""Settings found bad when they are used (exit status 1); see the test below."""

ANY_VALUE = ("service_name", "instance_id")
"""Names for traces: any text will do (and they have no flag)."""

NO_FLAG_VALUE = {
    "allow_delete",
    "compaction",
    "manual_publishing",
    "temporary_slot",
    "random_slot_name",
    "otel_debug",
}
"""--allow-delete and --manual-publishing are switches; --compaction takes on or off (its
own test)."""
NO_ENV_VALUE = {"secret"}  # an empty variable counts as unset


def test_every_setting_has_a_bad_value_tested() -> None:
    assert set(BAD_VALUES) | set(AT_START) | set(ANY_VALUE) == set(Settings.__struct_fields__)


def given(field: str, how: str, value: str) -> tuple[list[str], dict[str, str], str]:
    """(arguments, environment, name in the message) giving ``field`` ``value``."""
    if how == "flag":
        flag = "--" + field.replace("_", "-")
        return ["serve", f"{flag}={value}"], {}, flag
    return ["serve"], {ENV[field][0]: value}, ENV[field][0]


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("field", "how"),
    [
        (field, how)
        for field in sorted(BAD_VALUES)
        for how in ("flag", "env")
        if field not in (NO_FLAG_VALUE if how == "flag" else NO_ENV_VALUE)
    ],
)
def test_a_bad_setting_is_one_line(field: str, how: str, tmp_path: Path) -> None:
    value, reason = BAD_VALUES[field]
    args, env, name = given(field, how, value)
    # Should the check be missing, it fails fast on an unreachable database, not serving.
    base = {"DATABASE_URL": UNREACHABLE, "PYSYNC_PORT": str(free_port())}
    done = pysync_cli(*args, env=clean_env(**{**base, **env}), cwd=tmp_path)
    shown = "" if field in ("database_url", "pooled_database_url", "secret") else f" {value!r}"
    assert one_line(done) == f"pysync: invalid {name}{shown}: {reason}"
    assert done.returncode == 2


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_flag_or_variable_of_the_wrong_type_is_one_line(how: str, tmp_path: Path) -> None:
    args, env, name = given("port", how, "abc")
    done = pysync_cli(*args, env=clean_env(DATABASE_URL=UNREACHABLE, **env), cwd=tmp_path)
    assert one_line(done) == f"pysync: invalid {name} 'abc': expected an integer"
    assert done.returncode == 2


@pytest.mark.parametrize(
    ("flag", "reason"),
    [
        ("--host", "expected an interface's address or name, e.g. 127.0.0.1"),
        ("--publication", "a publication name is 1 to 63 bytes"),
        ("--slot", "a replication slot name is 1 to 63 lower-case letters, digits or '_'"),
    ],
)
def test_an_empty_flag_is_one_line(flag: str, reason: str, tmp_path: Path) -> None:
    done = pysync_cli("serve", f"{flag}=", env=clean_env(DATABASE_URL=UNREACHABLE), cwd=tmp_path)
    assert (one_line(done), done.returncode) == (f"pysync: invalid {flag} '': {reason}", 2)


def test_compaction_flag_says_on_or_off(tmp_path: Path) -> None:
    done = pysync_cli("serve", "--compaction", "maybe", cwd=tmp_path)
    assert one_line(done) == "pysync: invalid --compaction 'maybe': expected on or off"


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize("field", AT_START)
def test_a_setting_found_bad_at_start_is_one_line(field: str, how: str, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    port = free_port()
    value, expected, code = {
        "host": (
            "no.such.host.invalid",
            f"pysync: cannot listen on no.such.host.invalid:{port}: Name or service not "
            "known; check --host / PYSYNC_HOST.",
            1,
        ),
        "secret_file": (
            f"{tmp_path}/missing",
            f"pysync: cannot read the secret file {tmp_path}/missing: No such file or directory",
            2,
        ),
        "data_dir": (
            str(a_file),
            f"pysync: cannot use the data directory {a_file}: Not a directory "
            f"({a_file}/pysync.lock); check --data-dir / PYSYNC_DATA_DIR.",
            1,
        ),
        "storage_dir": (
            str(a_file),
            f"pysync: cannot use {a_file}/pysync.lock: Not a directory; check --storage-dir "
            "/ PYSYNC_STORAGE_DIR (default <data dir>/storage).",
            1,
        ),
    }[field]
    args, env, _ = given(field, how, value)
    base = {"PYSYNC_PORT": str(port)}
    if field != "data_dir":  # the private Postgres is what a data directory is used for
        base["DATABASE_URL"] = UNREACHABLE
    done = pysync_cli(*args, env=clean_env(**{**base, **env}), cwd=tmp_path)
    assert (one_line(done), done.returncode) == (expected, code)


def test_an_unreachable_database_says_why_in_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    done = pysync_cli(
        "serve",
        env=clean_env(
            DATABASE_URL=f"postgresql://nobody@127.0.0.1:{port}/postgres",
            PYSYNC_PORT=str(free_port()),
        ),
        cwd=tmp_path,
    )
    assert one_line(done) == (
        f"pysync: cannot connect to the database at 127.0.0.1:{port}/postgres: Connection "
        "refused; is the server running on that host and accepting TCP/IP connections? "
        "Check --database-url / DATABASE_URL."
    )
    assert done.returncode == 1


def test_a_wrong_password_says_so_in_one_line(database_url: str, tmp_path: Path) -> None:
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    wrong = psycopg.conninfo.make_conninfo(database_url, password="wrong", passfile="/dev/null")
    done = pysync_cli(
        "serve", env=clean_env(DATABASE_URL=wrong, PYSYNC_PORT=str(free_port())), cwd=tmp_path
    )
    target = f"{info['host']}:{info['port']}/{info['dbname']}"
    assert one_line(done) == (
        f"pysync: cannot connect to the database at {target}: password authentication "
        f'failed for user "{info["user"]}". Check --database-url / DATABASE_URL.'
    )


@pytest.mark.postgres  # a Postgres of its own
def test_pysync_psql_opens_the_private_postgres_of_a_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "pysync"
    done = pysync_cli("psql", "--data-dir", str(data_dir), "-c", "SELECT 1")
    assert (done.returncode, done.stderr) == (
        1,
        f"pysync: no private Postgres is running in {data_dir}: start it with "
        f"pysync serve --data-dir {data_dir} (and keep that running)\n",
    )
    server = ServeProcess(["--data-dir", str(data_dir), "--port", str(free_port())])
    try:
        server.wait_ready()
        hint = f"  create tables with: pysync psql --data-dir {data_dir} (psql on that URL)"
        deadline = time.monotonic() + 10  # printed just after the ready line
        while hint not in server.lines:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        created = pysync_cli(
            "psql", "--data-dir", str(data_dir), "-c", "CREATE TABLE t (id int PRIMARY KEY)"
        )
        assert (created.returncode, created.stdout) == (0, "CREATE TABLE\n"), created.stderr
        # PYSYNC_DATA_DIR as serve takes it; arguments after -- go to psql as they are.
        version = pysync_cli(
            "psql",
            "--",
            "-At",
            "-c",
            "SELECT count(*) FROM t",
            env=clean_env(PYSYNC_DATA_DIR=str(data_dir)),
        )
        assert (version.returncode, version.stdout) == (0, "0\n"), version.stderr
    finally:
        assert server.stop(), server.output()
        stop_leftover_postgres(data_dir)
