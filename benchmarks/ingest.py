#!/usr/bin/env python
"""Ingest benchmark: pysync's replication stream against ``pg_recvlogical``.

Run from the repository root::

    python benchmarks/ingest.py

Starts a private Postgres 18 (``temporary_cluster``), builds two backlogs in logical
slots created *before* the load, and drains each backlog once with ``pg_recvlogical``
(pgoutput to /dev/null) and once with pysync (``ReplicationStream``: libpq COPY loop,
pgoutput decoder, transaction assembly), sequentially, never concurrently:

1. backlog: ``pgbench -i -s 10``, then ``pgbench -c 4 -j 2 -T 20`` with no consumer
   attached; the 4 pgbench tables are published with REPLICA IDENTITY FULL.
2. bulk: one transaction inserting 1,000,000 rows into a published table.

Every slot is created before its load, so all consumers see the same backlog. With
``--rounds 2`` (the default) each consumer drains the backlog twice from its own slots,
in the order pg_recvlogical, pysync, pysync, pg_recvlogical, so neither side always goes
first; the rate reported is total row changes / total drain time. A third slot is read
with ``pg_logical_slot_peek_binary_changes`` (not timed) to check that pysync saw
exactly the row changes in the backlog. Finally the bulk transaction is drained once
more by each consumer with protocol 2 streaming (information only).

The last line printed is::

    ingest ratio pysync/pg_recvlogical: backlog X.XX bulk Y.YY

(above 1.00: pysync is faster).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass

import psycopg

from pysync.postgres.cluster import PostgresCluster, temporary_cluster
from pysync.postgres.lsn import format_lsn, parse_lsn
from pysync.postgres.pgoutput import Message
from pysync.postgres.publication import ensure_publication, publish_table
from pysync.postgres.replication import ReplicationStream
from pysync.postgres.transactions import Change, Transaction

DBNAME = "bench"
PUBLICATION = "bench"
PGBENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")
BULK_TABLE = "t"
BULK_ROWS = 1_000_000
SENTINEL = "pysync-bench-end"
"""Prefix of a transactional logical message written after each load (see ``end_load``)."""


@dataclass
class Drain:
    consumer: str
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def say(text: str = "") -> None:
    print(text, flush=True)


# -- the cluster ----------------------------------------------------------------------


def client_env(cluster: PostgresCluster) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PGHOST="127.0.0.1",
        PGPORT=str(cluster.port),
        PGUSER="postgres",
        PGPASSWORD=cluster.password,
        PGDATABASE=DBNAME,
    )
    return env


def run_client(cluster: PostgresCluster, program: str, *args: str) -> str:
    result = subprocess.run(
        [str(cluster.bin_dir / program), *args],
        env=client_env(cluster), capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        sys.exit(f"{program} {' '.join(args)} failed (exit {result.returncode}):\n"
                 f"{result.stdout}{result.stderr}")
    return result.stdout + result.stderr


def create_slots(conn: psycopg.Connection[tuple[object, ...]], *names: str) -> None:
    for name in names:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))


def drop_slot(conn: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    conn.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        "WHERE slot_name = %s AND NOT active",
        (name,),
    )


def end_load(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """Mark the end of a load; return the WAL position both consumers drain up to.

    A transactional logical message is committed after the load: pysync stops when the
    transaction carrying it is delivered, pg_recvlogical (which gets the same message,
    ``messages=true`` being pysync's default) at ``--endpos``, the WAL position after it.
    """
    conn.execute("SELECT pg_logical_emit_message(true, %s, 'end')", (SENTINEL,))
    (lsn,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()  # type: ignore[misc]
    return parse_lsn(str(lsn))


def peek_row_changes(
    conn: psycopg.Connection[tuple[object, ...]], slot: str, end: int
) -> int:
    """Row changes (I/U/D messages) in ``slot`` up to ``end``, decoded server-side."""
    (count,) = conn.execute(
        "SELECT count(*) FROM pg_logical_slot_peek_binary_changes("
        "  %s, %s::pg_lsn, NULL, 'proto_version', '1', 'publication_names', %s)"
        " WHERE get_byte(data, 0) IN (73, 85, 68)",
        (slot, format_lsn(end), PUBLICATION),
    ).fetchone()  # type: ignore[misc]
    return int(count)


def confirmed_lsn(conn: psycopg.Connection[tuple[object, ...]], slot: str) -> int:
    (lsn,) = conn.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()  # type: ignore[misc]
    return parse_lsn(str(lsn))


# -- the two consumers ----------------------------------------------------------------


def drain_pg_recvlogical(
    cluster: PostgresCluster, slot: str, end: int, rows: int, *, protocol: int = 1
) -> Drain:
    """Time ``pg_recvlogical`` draining ``slot`` to /dev/null up to ``end``.

    pg_recvlogical does not count rows; ``rows`` is the verified count of the backlog.
    """
    options = [f"proto_version={protocol}", f"publication_names={PUBLICATION}", "messages=true"]
    if protocol >= 2:
        options.append("streaming=on")
    args = [
        str(cluster.bin_dir / "pg_recvlogical"), "--start", "-d", DBNAME, "-S", slot, "-P", "pgoutput",
        *[arg for option in options for arg in ("-o", option)],
        "-f", "/dev/null", f"--endpos={format_lsn(end)}", "--no-loop",
    ]
    started = time.perf_counter()
    result = subprocess.run(args, env=client_env(cluster), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"pg_recvlogical failed (exit {result.returncode}): {result.stderr}")
    return Drain("pg_recvlogical", rows, seconds)


async def _drain_pysync(url: str, slot: str, end: int, streaming: bool) -> tuple[int, int]:
    stream = ReplicationStream(
        url, slot=slot, publication=PUBLICATION, streaming=streaming, reconnect=False
    )
    rows = 0
    delivered = 0
    items = stream.transactions()
    try:
        async for item in items:
            if type(item) is not Transaction:
                continue
            for change in item.changes:
                if type(change) is Change:
                    rows += 1
            stream.acknowledge(item.end_lsn)
            delivered = item.end_lsn
            if item.end_lsn >= end or any(m.prefix == SENTINEL for m in item.messages):
                break
    finally:
        await items.aclose()
        await stream.close()
    return rows, delivered


def drain_pysync(url: str, slot: str, end: int, *, streaming: bool = False) -> tuple[Drain, int]:
    """Time pysync draining ``slot`` until the end-of-load transaction is delivered."""
    started = time.perf_counter()
    rows, delivered = asyncio.run(_drain_pysync(url, slot, end, streaming))
    seconds = time.perf_counter() - started
    return Drain("pysync", rows, seconds), delivered


# -- one scenario ---------------------------------------------------------------------


@dataclass
class Result:
    rows: int
    recvlogical: list[Drain]
    pysync: list[Drain]

    @staticmethod
    def _rate(drains: list[Drain]) -> float:
        return sum(d.rows for d in drains) / sum(d.seconds for d in drains)

    @property
    def recvlogical_rate(self) -> float:
        return self._rate(self.recvlogical)

    @property
    def pysync_rate(self) -> float:
        return self._rate(self.pysync)

    @property
    def ratio(self) -> float:
        return self.pysync_rate / self.recvlogical_rate


def slot_names(prefix: str, rounds: int) -> tuple[list[str], list[str], str]:
    recv = [f"{prefix}_recvlogical_{i}" for i in range(rounds)]
    pysync = [f"{prefix}_pysync_{i}" for i in range(rounds)]
    return recv, pysync, f"{prefix}_verify"


def drain_all(
    cluster: PostgresCluster,
    conn: psycopg.Connection[tuple[object, ...]],
    name: str,
    recv_slots: list[str],
    pysync_slots: list[str],
    verify_slot: str,
    end: int,
) -> Result:
    url = cluster.url(DBNAME)
    expected = peek_row_changes(conn, verify_slot, end)
    drop_slot(conn, verify_slot)
    say(f"  {name}: {expected:,} row changes in the backlog (pg_logical_slot_peek)")
    recv: list[Drain] = []
    mine: list[Drain] = []
    for i, (recv_slot, pysync_slot) in enumerate(zip(recv_slots, pysync_slots, strict=True)):
        order = ("recvlogical", "pysync") if i % 2 == 0 else ("pysync", "recvlogical")
        for consumer in order:
            if consumer == "recvlogical":
                drain = drain_pg_recvlogical(cluster, recv_slot, end, expected)
                reached = confirmed_lsn(conn, recv_slot)
                if reached < end:
                    sys.exit(f"pg_recvlogical stopped at {format_lsn(reached)}, "
                             f"before {format_lsn(end)}")
                recv.append(drain)
                drop_slot(conn, recv_slot)
            else:
                drain, delivered = drain_pysync(url, pysync_slot, end)
                if drain.rows != expected:
                    sys.exit(f"pysync delivered {drain.rows} row changes, the backlog has "
                             f"{expected} (last end LSN {format_lsn(delivered)})")
                mine.append(drain)
                drop_slot(conn, pysync_slot)
            say(f"  {name} round {i + 1} {drain.consumer:>14}: {drain.rows:,} rows in "
                f"{drain.seconds:.2f} s = {drain.rate:,.0f} rows/s")
    result = Result(expected, recv, mine)
    say(f"  {name}: pg_recvlogical {result.recvlogical_rate:,.0f} rows/s, "
        f"pysync {result.pysync_rate:,.0f} rows/s, ratio {result.ratio:.2f}")
    return result


def backlog(cluster: PostgresCluster, conn: psycopg.Connection[tuple[object, ...]],
            rounds: int, scale: int, seconds: int) -> Result:
    say(f"backlog: pgbench -i -s {scale}")
    run_client(cluster, "pgbench", "-i", "-q", "-s", str(scale))
    for table in PGBENCH_TABLES:
        publish_table(conn, PUBLICATION, "public", table)
    recv_slots, pysync_slots, verify_slot = slot_names("backlog", rounds)
    create_slots(conn, *recv_slots, *pysync_slots, verify_slot)
    say(f"backlog: pgbench -c 4 -j 2 -T {seconds} (no consumer attached)")
    output = run_client(cluster, "pgbench", "-c", "4", "-j", "2", "-T", str(seconds))
    tps = next((line.strip() for line in output.splitlines() if line.startswith("tps")), "")
    end = end_load(conn)
    say(f"  {tps}; end of backlog at {format_lsn(end)}")
    return drain_all(cluster, conn, "backlog", recv_slots, pysync_slots, verify_slot, end)


def bulk(cluster: PostgresCluster, conn: psycopg.Connection[tuple[object, ...]],
         rounds: int, rows: int, streaming: bool) -> tuple[Result, Drain | None, Drain | None]:
    conn.execute(f"CREATE TABLE {BULK_TABLE} (id int)")
    publish_table(conn, PUBLICATION, "public", BULK_TABLE)
    recv_slots, pysync_slots, verify_slot = slot_names("bulk", rounds)
    stream_slots = ["bulk_stream_recvlogical", "bulk_stream_pysync"] if streaming else []
    create_slots(conn, *recv_slots, *pysync_slots, verify_slot, *stream_slots)
    say(f"bulk: INSERT INTO {BULK_TABLE} SELECT generate_series(1, {rows:_}) (one transaction)")
    started = time.perf_counter()
    conn.execute(f"INSERT INTO {BULK_TABLE} SELECT generate_series(1, %s)", (rows,))
    end = end_load(conn)
    say(f"  inserted in {time.perf_counter() - started:.1f} s; end at {format_lsn(end)}")
    result = drain_all(cluster, conn, "bulk", recv_slots, pysync_slots, verify_slot, end)
    if not streaming:
        return result, None, None
    recv = drain_pg_recvlogical(cluster, stream_slots[0], end, result.rows, protocol=2)
    drop_slot(conn, stream_slots[0])
    mine, _ = drain_pysync(cluster.url(DBNAME), stream_slots[1], end, streaming=True)
    drop_slot(conn, stream_slots[1])
    if mine.rows != result.rows:
        sys.exit(f"pysync (streaming) delivered {mine.rows} row changes, expected {result.rows}")
    for drain in (recv, mine):
        say(f"  bulk protocol 2 streaming {drain.consumer:>14}: {drain.rows:,} rows in "
            f"{drain.seconds:.2f} s = {drain.rate:,.0f} rows/s")
    return result, recv, mine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2,
                        help="drains per consumer and scenario, alternating order (default 2)")
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i scale (default 10)")
    parser.add_argument("--seconds", type=int, default=20, help="pgbench -T (default 20)")
    parser.add_argument("--bulk-rows", type=int, default=BULK_ROWS,
                        help=f"rows in the bulk transaction (default {BULK_ROWS:_})")
    parser.add_argument("--no-streaming", action="store_true",
                        help="skip the protocol 2 streaming drains of the bulk transaction")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    started = time.perf_counter()
    with temporary_cluster() as cluster:
        say(f"Postgres {cluster.bin_dir} on port {cluster.port}; Python {platform.python_version()}, "
            f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__}), {os.cpu_count()} CPUs")
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DBNAME}")
        with psycopg.connect(cluster.url(DBNAME), autocommit=True) as conn:
            ensure_publication(conn, PUBLICATION)
            backlog_result = backlog(cluster, conn, args.rounds, args.scale, args.seconds)
            bulk_result, _, _ = bulk(cluster, conn, args.rounds, args.bulk_rows,
                                     not args.no_streaming)
    say(f"total run time {time.perf_counter() - started:.0f} s")
    say(f"ingest ratio pysync/pg_recvlogical: backlog {backlog_result.ratio:.2f} "
        f"bulk {bulk_result.ratio:.2f}")


if __name__ == "__main__":
    main()
