"""The latency marker: one row updated at a fixed rate, its commit times remembered.

Commit-to-client latency is measured on this row rather than on pgbench's own rows:
``pgbench_history.mtime`` is the transaction's *start* time in the server's clock and
only exists for TPC-B-like scripts, while the marker's commit time is taken in this
process (CLOCK_MONOTONIC, shared with the subscriber process) right after ``COMMIT``
returns, for any workload, including select-only. Its changes travel through the same
replication stream as pgbench's, behind whatever backlog there is.
"""

from __future__ import annotations

import threading
import time

from psycopg import sql

from pysync.bench.database import connect


class MarkerWriter:
    def __init__(self, url: str, table: str, interval: float, first_seq: int) -> None:
        self.url = url
        self.table = table
        self.interval = interval
        self.seq = first_seq
        self.commits: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="marker", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        statement = sql.SQL("UPDATE {} SET seq = %s WHERE id = 1").format(
            sql.Identifier(self.table)
        )
        try:
            with connect(self.url) as conn:
                start = time.monotonic()
                tick = 0
                while not self._stop.is_set():
                    self.seq += 1
                    conn.execute(statement, (self.seq,), prepare=True)
                    self.commits[self.seq] = time.monotonic()
                    tick += 1
                    pause = start + tick * self.interval - time.monotonic()
                    if pause > 0:
                        self._stop.wait(pause)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
