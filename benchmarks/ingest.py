#!/usr/bin/env python
"""Ingest benchmark: pysync's replication stream against ``pg_recvlogical``.

Run from the repository root::

    python benchmarks/ingest.py

Starts a private Postgres 18 (``temporary_cluster``), builds two backlogs in logical
slots created *before* the load (so every consumer sees the same backlog), then drains
each backlog with ``pg_recvlogical`` (pgoutput to /dev/null) and with pysync
(``ReplicationStream``: libpq COPY loop, pgoutput decoder, transaction assembly), one
drain at a time, never concurrently:

1. backlog: ``pgbench -i -s 10``, then ``pgbench -c 4 -j 2 -T 20`` with no consumer
   attached; the 4 pgbench tables are published with REPLICA IDENTITY FULL.
2. bulk: one transaction inserting 1,000,000 rows into a published table.

A transactional logical message committed after each load marks its end: pysync stops
once the transaction carrying it is delivered, pg_recvlogical at ``--endpos`` (the WAL
position after it). Both use the same pgoutput options (proto_version 1, the
publication, ``messages`` on, as pysync requests by default). With ``--rounds 2`` (the
default) each consumer drains each backlog twice from its own slots, in the order
pg_recvlogical, pysync, pysync, pg_recvlogical, so neither side always goes first; a
rate is total row changes / total drain time, connection set-up included. One more slot
is read with ``pg_logical_slot_peek_binary_changes`` (not timed) to check that pysync
delivered exactly the row changes in the backlog. Finally the bulk transaction is
drained once more by each consumer with protocol 2 streaming (information only).

Each drain also reports CPU seconds of the consumer, of the walsender (read from the
postmaster's reaped-children times after it exits, nothing polls during the drain) and
of the rest of the machine (a noise indicator: the machines are shared), and how often
the consumer slept waiting for data. A consumer that keeps up with the walsender makes
it send every message on its own, which costs the walsender more CPU per row: the ratio
depends on the load on the machine (see benchmarks/README.md).

The last line printed is::

    ingest ratio pysync/pg_recvlogical: backlog X.XX bulk Y.YY

(above 1.00: pysync is faster).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import cast

import psycopg

from hot_path import hot_path
from pysync.postgres.cluster import PostgresCluster, temporary_cluster
from pysync.postgres.lsn import format_lsn, parse_lsn
from pysync.postgres.publication import ensure_publication, publish_table
from pysync.postgres.replication import Item, ReplicationStream
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
    cpu: float
    """CPU time (user + system) of the consumer process during the drain."""
    sleeps: int
    """Voluntary context switches of the consumer: how often it waited for data."""
    walsender_cpu: float = 0.0
    """CPU time of the server processes that exited during the drain: the walsender."""
    server_cpu: float = 0.0
    """CPU time of the other server processes (checkpointer, I/O workers, ...)."""
    other_cpu: float = 0.0
    """CPU time used on the machine by everything else during the drain (noise)."""

    def cpu_summary(self) -> str:
        return (
            f"CPU s: consumer {self.cpu:.2f}, walsender {self.walsender_cpu:.2f}, "
            f"other server {self.server_cpu:.2f}, rest of machine {self.other_cpu:.2f}; "
            f"consumer sleeps {self.sleeps:,}"
        )

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
        env=client_env(cluster),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(
            f"{program} {' '.join(args)} failed (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
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


def scalar(
    conn: psycopg.Connection[tuple[object, ...]], query: str, params: tuple[object, ...] = ()
) -> str:
    """The single value a query returns, as text."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise RuntimeError(f"no row from {query}")
    return str(row[0])


def end_load(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """Mark the end of a load; return the WAL position both consumers drain up to.

    A transactional logical message is committed after the load: pysync stops when the
    transaction carrying it is delivered, pg_recvlogical (which gets the same message,
    ``messages=true`` being pysync's default) at ``--endpos``, the WAL position after it.
    """
    conn.execute("SELECT pg_logical_emit_message(true, %s, 'end')", (SENTINEL,))
    return parse_lsn(scalar(conn, "SELECT pg_current_wal_lsn()::text"))


def peek_row_changes(conn: psycopg.Connection[tuple[object, ...]], slot: str, end: int) -> int:
    """Row changes (I/U/D messages) in ``slot`` up to ``end``, decoded server-side."""
    return int(
        scalar(
            conn,
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes("
            "  %s, %s::pg_lsn, NULL, 'proto_version', '1', 'publication_names', %s)"
            " WHERE get_byte(data, 0) IN (73, 85, 68)",
            (slot, format_lsn(end), PUBLICATION),
        )
    )


def confirmed_lsn(conn: psycopg.Connection[tuple[object, ...]], slot: str) -> int:
    return parse_lsn(
        scalar(
            conn,
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )
    )


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int | str) -> list[str]:
    """Fields of /proc/PID/stat after the command name (field 3 onwards)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def server_cpu(cluster: PostgresCluster) -> tuple[float, float]:
    """CPU seconds of the server: (exited backends, running processes).

    A walsender's CPU time is added to the postmaster's cutime/cstime once it exits, so
    across a drain the first figure grows by the walsender's CPU (plus any short-lived
    backend, such as pysync's setup connection), without polling during the drain. The
    second covers the postmaster and its running children (checkpointer, I/O workers...).
    """
    pid = cluster.pid
    if pid is None:
        return 0.0, 0.0
    try:
        fields = _proc_stat(pid)
    except (OSError, IndexError):
        return 0.0, 0.0
    reaped = int(fields[13]) + int(fields[14])
    running = int(fields[11]) + int(fields[12])
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            child = _proc_stat(entry.name)
        except (OSError, IndexError):
            continue
        if child[1] == str(pid):
            running += int(child[11]) + int(child[12])
    return reaped / _TICK, running / _TICK


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all CPUs), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    # user nice system idle iowait irq softirq steal ...
    return (fields[0] + fields[1] + fields[2] + sum(fields[5:8])) / _TICK


class CpuMeter:
    """Where the CPU time went during one drain (read before and after, never during)."""

    def __init__(self, cluster: PostgresCluster) -> None:
        self.cluster = cluster
        self.reaped, self.running = server_cpu(cluster)
        self.busy = machine_busy()

    def finish(self, conn: psycopg.Connection[tuple[object, ...]], slot: str, drain: Drain) -> None:
        """Wait until the slot's walsender has exited and been reaped, then account."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if not row or not row[0]:
                break
            time.sleep(0.02)
        reaped, running = server_cpu(self.cluster)
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = server_cpu(self.cluster)
            if now[0] == reaped:
                break
            reaped, running = now
        drain.walsender_cpu = reaped - self.reaped
        drain.server_cpu = running - self.running
        drain.other_cpu = (
            machine_busy() - self.busy - drain.cpu - drain.walsender_cpu - drain.server_cpu
        )


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
        str(cluster.bin_dir / "pg_recvlogical"),
        "--start",
        "-d",
        DBNAME,
        "-S",
        slot,
        "-P",
        "pgoutput",
        *[arg for option in options for arg in ("-o", option)],
        "-f",
        "/dev/null",
        f"--endpos={format_lsn(end)}",
        "--no-loop",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(args, env=client_env(cluster), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"pg_recvlogical failed (exit {result.returncode}): {result.stderr}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Drain("pg_recvlogical", rows, seconds, cpu, after.ru_nvcsw - before.ru_nvcsw)


async def _drain_pysync(url: str, slot: str, end: int, streaming: bool) -> tuple[int, int]:
    stream = ReplicationStream(
        url, slot=slot, publication=PUBLICATION, streaming=streaming, reconnect=False
    )
    rows = 0
    delivered = 0
    # An async generator: closed explicitly so it does not linger after ``break``.
    items = cast("AsyncGenerator[Item, None]", stream.transactions())
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
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    rows, delivered = asyncio.run(_drain_pysync(url, slot, end, streaming))
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Drain("pysync", rows, seconds, cpu, after.ru_nvcsw - before.ru_nvcsw), delivered


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
            meter = CpuMeter(cluster)
            if consumer == "recvlogical":
                drain = drain_pg_recvlogical(cluster, recv_slot, end, expected)
                meter.finish(conn, recv_slot, drain)
                reached = confirmed_lsn(conn, recv_slot)
                if reached < end:
                    sys.exit(
                        f"pg_recvlogical stopped at {format_lsn(reached)}, before {format_lsn(end)}"
                    )
                recv.append(drain)
                drop_slot(conn, recv_slot)
            else:
                drain, delivered = drain_pysync(url, pysync_slot, end)
                meter.finish(conn, pysync_slot, drain)
                if drain.rows != expected:
                    sys.exit(
                        f"pysync delivered {drain.rows} row changes, the backlog has "
                        f"{expected} (last end LSN {format_lsn(delivered)})"
                    )
                mine.append(drain)
                drop_slot(conn, pysync_slot)
            say(
                f"  {name} round {i + 1} {drain.consumer:>14}: {drain.rows:,} rows in "
                f"{drain.seconds:.2f} s = {drain.rate:,.0f} rows/s; {drain.cpu_summary()}"
            )
    result = Result(expected, recv, mine)
    say(
        f"  {name}: pg_recvlogical {result.recvlogical_rate:,.0f} rows/s, "
        f"pysync {result.pysync_rate:,.0f} rows/s, ratio {result.ratio:.2f}"
    )
    for label, drains in (("pg_recvlogical", recv), ("pysync", mine)):
        rows = sum(d.rows for d in drains)
        say(
            f"  {name}: CPU per row change with {label}: consumer "
            f"{sum(d.cpu for d in drains) / rows * 1e6:.2f} µs, walsender "
            f"{sum(d.walsender_cpu for d in drains) / rows * 1e6:.2f} µs; wall "
            f"{sum(d.seconds for d in drains) / rows * 1e6:.2f} µs"
        )
    return result


def backlog(
    cluster: PostgresCluster,
    conn: psycopg.Connection[tuple[object, ...]],
    rounds: int,
    scale: int,
    seconds: int,
) -> Result:
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


def bulk(
    cluster: PostgresCluster,
    conn: psycopg.Connection[tuple[object, ...]],
    rounds: int,
    rows: int,
    streaming: bool,
) -> tuple[Result, Drain | None, Drain | None]:
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
    meter = CpuMeter(cluster)
    recv = drain_pg_recvlogical(cluster, stream_slots[0], end, result.rows, protocol=2)
    meter.finish(conn, stream_slots[0], recv)
    drop_slot(conn, stream_slots[0])
    meter = CpuMeter(cluster)
    mine, _ = drain_pysync(cluster.url(DBNAME), stream_slots[1], end, streaming=True)
    meter.finish(conn, stream_slots[1], mine)
    drop_slot(conn, stream_slots[1])
    if mine.rows != result.rows:
        sys.exit(f"pysync (streaming) delivered {mine.rows} row changes, expected {result.rows}")
    for drain in (recv, mine):
        say(
            f"  bulk protocol 2 streaming {drain.consumer:>14}: {drain.rows:,} rows in "
            f"{drain.seconds:.2f} s = {drain.rate:,.0f} rows/s; {drain.cpu_summary()}"
        )
    return result, recv, mine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="drains per consumer and scenario, alternating order (default 2)",
    )
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i scale (default 10)")
    parser.add_argument("--seconds", type=int, default=20, help="pgbench -T (default 20)")
    parser.add_argument(
        "--bulk-rows",
        type=int,
        default=BULK_ROWS,
        help=f"rows in the bulk transaction (default {BULK_ROWS:_})",
    )
    parser.add_argument(
        "--no-streaming",
        action="store_true",
        help="skip the protocol 2 streaming drains of the bulk transaction",
    )
    args = parser.parse_args()
    print(hot_path(), flush=True)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    started = time.perf_counter()
    with temporary_cluster() as cluster:
        say(
            f"Postgres {cluster.bin_dir} on port {cluster.port}; Python {platform.python_version()}, "
            f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__}), {os.cpu_count()} CPUs"
        )
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DBNAME}")
        with psycopg.connect(cluster.url(DBNAME), autocommit=True) as conn:
            ensure_publication(conn, PUBLICATION)
            backlog_result = backlog(cluster, conn, args.rounds, args.scale, args.seconds)
            bulk_result, _, _ = bulk(
                cluster, conn, args.rounds, args.bulk_rows, not args.no_streaming
            )
    say(f"total run time {time.perf_counter() - started:.0f} s")
    say(
        f"ingest ratio pysync/pg_recvlogical: backlog {backlog_result.ratio:.2f} "
        f"bulk {bulk_result.ratio:.2f}"
    )


if __name__ == "__main__":
    main()
