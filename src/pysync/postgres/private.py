"""The private Postgres of a data directory (``<data_dir>/postgres``), owned by one process
at a time: what ``pysync serve`` and an embedded ``Sync`` use when no database URL is
given, for development and tests."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pysync.lockfile import DirectoryLock
from pysync.postgres.cluster import PostgresCluster, is_private_url
from pysync.private_files import tighten

log = logging.getLogger(__name__)


class PrivateDatabase:
    """Locks ``data_dir`` (one pysync per data directory), then starts its cluster."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.cluster = PostgresCluster(data_dir / "postgres", own_parent=True)
        self._lock = DirectoryLock(data_dir, "data directory")

    @staticmethod
    def wanted(data_dir: Path, database_url: str | None) -> bool:
        """No URL, or the URL of this data directory's cluster."""
        return database_url is None or is_private_url(data_dir / "postgres", database_url)

    def start(self) -> str:
        """Start it (blocking); its URL. Raises DirectoryInUse, ClusterError."""
        self._lock.acquire()
        try:
            # Root's is opened to the server user's group (0710) by the cluster.
            tighten(self.data_dir, "data directory", mode=0o700 if os.geteuid() else 0o710)
            started = self.cluster.start()
        except BaseException:
            self._lock.release()
            raise
        if not started:
            log.warning(
                "the private Postgres in %s was left running by an earlier pysync; using it",
                self.cluster.root,
            )
        return self.cluster.url()

    def stop(self) -> None:
        """Ours: this process holds the data directory, so no other pysync uses it."""
        try:
            self.cluster.stop()
        finally:
            self._lock.release()
