from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from pysync.postgres.cluster import ClusterError, PostgresCluster, free_port


def test_cluster_is_logical_and_local(pg_cluster: PostgresCluster) -> None:
    with psycopg.connect(pg_cluster.url()) as conn:
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('wal_level', 'listen_addresses', 'max_slot_wal_keep_size')"
            ).fetchall()
        )
    assert settings["wal_level"] == "logical"
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["max_slot_wal_keep_size"] != "-1"


def test_wrong_password_is_rejected(pg_cluster: PostgresCluster) -> None:
    url = pg_cluster.url().replace(pg_cluster.password, "wrong")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url)


@pytest.mark.postgres  # a Postgres of its own
def test_persistent_cluster_survives_restart(tmp_path: Path) -> None:
    cluster = PostgresCluster(tmp_path / "pg", fast=True)
    try:
        cluster.start()
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (id int)")
            conn.execute("INSERT INTO kept VALUES (7)")
        cluster.stop()
        assert not cluster.running
        again = PostgresCluster(tmp_path / "pg", fast=True)
        again.start()
        with psycopg.connect(again.url()) as conn:
            assert conn.execute("SELECT id FROM kept").fetchall() == [(7,)]
        again.stop()
    finally:
        cluster.destroy()


def test_port_taken_gives_readable_error(pg_cluster: PostgresCluster, tmp_path: Path) -> None:
    cluster = PostgresCluster(tmp_path / "pg", port=pg_cluster.port, fast=True)
    try:
        with pytest.raises(ClusterError, match=f"port {pg_cluster.port} .* already in use"):
            cluster.start()
    finally:
        cluster.destroy()


def test_missing_binaries_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYSYNC_PG_BIN", str(tmp_path))
    with pytest.raises(ClusterError, match="PYSYNC_PG_BIN=.*no 'postgres' binary"):
        PostgresCluster(tmp_path / "pg", port=free_port())
