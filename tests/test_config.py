"""Settings from the environment, and as the supervisor hands them to its workers."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import pysync
from pysync.config import SettingsError, from_env, make_settings


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
