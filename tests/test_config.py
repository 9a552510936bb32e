"""Settings from the environment, and as the supervisor hands them to its workers."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

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


def test_schema_check_interval_from_the_environment_and_checked() -> None:
    settings = make_settings(from_env({"PYSYNC_SCHEMA_CHECK_INTERVAL": "2.5"}))
    assert settings.schema_check_interval == 2.5
    with pytest.raises(SettingsError, match="schema_check_interval"):
        make_settings({"schema_check_interval": "-1"})
