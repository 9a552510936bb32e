#!/usr/bin/env python
"""Routing benchmark: cost per replicated change as the number of shapes grows.

Run from the repository root::

    python benchmarks/routing.py [--changes N] [--txn-size K] [--counts 1,100] [--no-memory]

Starts a private Postgres (``temporary_cluster``) only to validate shapes against the
catalog; no replication is involved. A table ``todos(id int primary key, user_id int,
title text, done bool)`` gets 1, 100, 10,000 and 100,000 shapes ``user_id = $1`` (one
per user), each built with ``validate`` (as ``Engine.shape`` does) and registered as a
ready ``ShapeConsumer`` with in-memory storage in an ``Engine(storage_dir=None)`` that is
never started. Synthetic ``Transaction``s made of real ``Change`` structs (with a
``pgoutput.Relation`` built from the catalog) are fed to ``Engine.apply``: inserts and
updates (3:1), change i for user i mod shapes, so each change touches exactly one
shape (with 100,000 shapes and 200,000 changes, each shape twice per pass). The time is everything ``apply`` does: router lookup, ``skip``, conversion to an
Electric entry, JSON encoding and appending to the shape's log.

Each count gets a cold pass (first touch of each shape builds its converter and binds
its WHERE clause), then ``--repeats`` warm passes (steady state), interleaved across the
counts so load from other processes hits them alike; the best warm pass is reported.
Times are CPU time of the applying thread (``time.thread_time``): ``apply`` does no I/O
here, and CPU time is far less disturbed than wall time when the machine is shared. Then
1,000 shapes with a non-indexable clause (``title ILIKE $1``, every shape its own
pattern, each change matches one) are checked one by one.

Memory per idle shape: tracemalloc over building and registering 10,000 shapes (with a
breakdown by allocation site), and RSS growth over building and registering 100,000.

The last line printed is::

    routing ratio 100000/1 shapes: X.XX

(warm changes/s with 100,000 shapes / with 1 shape; 1.00 = routing cost does not grow;
with ``--counts``, the most shapes / the fewest).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable

import psycopg

from hot_path import hot_path
from pysync.engine import Engine
from pysync.log.log import ShapeLog
from pysync.log.memory_storage import MemoryStorage
from pysync.postgres.cluster import temporary_cluster
from pysync.postgres.pgoutput import Relation, RelationColumn
from pysync.postgres.snapshot import SnapshotInfo
from pysync.postgres.transactions import Change, Transaction, Truncation
from pysync.shapes.consumer import ShapeConsumer
from pysync.shapes.definition import Shape, ShapeDefinition, validate
from pysync.shapes.store import new_handle

DBNAME = "bench"
COUNTS = (1, 100, 10_000, 100_000)
SCAN_SHAPES = 1_000

Conn = psycopg.Connection[tuple[object, ...]]


def say(text: str = "") -> None:
    print(text, flush=True)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- shapes -----------------------------------------------------------------------------


def user_shape(conn: Conn, user: int) -> Shape:
    return validate(conn, ShapeDefinition.create("todos", where="user_id = $1", params=[str(user)]))


def title_shape(conn: Conn, n: int) -> Shape:
    return validate(
        conn, ShapeDefinition.create("todos", where="title ILIKE $1", params=[f"%#{n:05d}#%"])
    )


def ready_shape(shape: Shape) -> ShapeConsumer:
    """A shape as after its snapshot: nothing pending, every transaction after it."""
    snapshot = SnapshotInfo(xmin=1, xmax=1, xip=(), lsn=0)
    return ShapeConsumer(new_handle(shape), shape, ShapeLog(MemoryStorage()), snapshot)


def new_engine(url: str) -> Engine:
    return Engine(url, storage_dir=None)


def register(engine: Engine, shapes: list[Shape]) -> list[ShapeConsumer]:
    lives = [ready_shape(s) for s in shapes]
    for live in lives:
        engine.registry.add(live)
    return lives


def relation_of(conn: Conn) -> Relation:
    """The Relation message pgoutput sends for ``todos`` (built from the catalog)."""
    rows = conn.execute(
        "SELECT a.attname, a.atttypid, a.atttypmod,"
        "       coalesce(a.attnum = ANY (i.indkey::int2[]), false)"
        " FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary"
        " WHERE a.attrelid = 'todos'::regclass AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum"
    ).fetchall()
    (oid,) = conn.execute("SELECT 'todos'::regclass::oid").fetchone()  # type: ignore[misc]
    # As pysync publishes it: REPLICA IDENTITY FULL, every column part of the identity.
    columns = tuple(
        RelationColumn(flags=1, name=str(name), type_oid=int(typ), type_mod=int(mod))  # type: ignore[call-overload]
        for name, typ, mod, _ in rows
    )
    return Relation(
        xid=None,
        oid=int(oid),  # type: ignore[arg-type]
        namespace="public",
        name="todos",
        replica_identity="f",
        columns=columns,
    )


# -- changes ----------------------------------------------------------------------------


def make_transactions(
    relation: Relation,
    changes: int,
    txn_size: int,
    row_for: Callable[[int], tuple[int, str]],
    first_xid: int,
    first_lsn: int,
) -> list[Transaction]:
    """``changes`` inserts/updates (3:1); change i has ``row_for(i)`` = (user_id, title)."""
    txns: list[Transaction] = []
    lsn = first_lsn
    batch: list[Change | Truncation] = []
    for i in range(changes):
        user, title = row_for(i)
        if i % 4 == 3:
            # An update of ``done`` with its old row (REPLICA IDENTITY FULL); the id is
            # not looked up.
            old = (str(i - 3), str(user), title, "f")
            batch.append(Change("update", relation, (str(i - 3), str(user), title, "t"), old))
        else:
            batch.append(Change("insert", relation, (str(i), str(user), title, "f"), None))
        if len(batch) == txn_size:
            lsn += 1000
            txns.append(Transaction(first_xid + len(txns), lsn, lsn + 100, 0, batch, []))
            batch = []
    if batch:
        lsn += 1000
        txns.append(Transaction(first_xid + len(txns), lsn, lsn + 100, 0, batch, []))
    return txns


def run(engine: Engine, txns: list[Transaction]) -> float:
    """CPU seconds of this thread applying ``txns`` (wall time is at the mercy of other
    processes on a shared machine; ``apply`` does no I/O with in-memory storage).

    The garbage collector stays on, as in production: with 100,000 shapes its full
    collections have many more objects to traverse.
    """
    apply = engine.collector.apply
    gc.collect()
    start = time.thread_time()
    for txn in txns:
        apply(txn)
    return time.thread_time() - start


def total_entries(lives: list[ShapeConsumer]) -> int:
    return sum(len(live.log.offsets) for live in lives)


def _user_of(count: int) -> Callable[[int], tuple[int, str]]:
    return lambda i: (i % count, f"todo {i}")


# -- phases -----------------------------------------------------------------------------


class Bench:
    """One engine with its shapes and a change pattern; passes of ``changes`` changes."""

    def __init__(
        self,
        url: str,
        relation: Relation,
        shapes: list[Shape],
        changes: int,
        txn_size: int,
        row_for: Callable[[int], tuple[int, str]],
        label: str,
    ) -> None:
        self.engine = new_engine(url)
        self.lives = register(self.engine, shapes)
        self.relation = relation
        self.changes = changes
        self.txn_size = txn_size
        self.row_for = row_for
        self.label = label
        self.xid = 1000
        self.lsn = 1_000_000
        self.cold = 0.0
        self.warm: list[float] = []

    def _pass(self) -> float:
        txns = make_transactions(
            self.relation, self.changes, self.txn_size, self.row_for, self.xid, self.lsn
        )
        self.xid = txns[-1].xid + 1
        self.lsn = txns[-1].end_lsn + 1000
        before = total_entries(self.lives)
        seconds = run(self.engine, txns)
        added = total_entries(self.lives) - before
        if added != self.changes:
            sys.exit(f"{self.label}: expected {self.changes} new log entries, got {added}")
        return seconds

    def cold_pass(self) -> None:
        """First touch of every shape: builds converters and binds WHERE clauses."""
        self.cold = self.changes / self._pass()

    def warm_pass(self) -> None:
        self.warm.append(self.changes / self._pass())

    @property
    def best(self) -> float:
        return max(self.warm)

    def report(self) -> None:
        say(
            f"  {self.label:<22} cold {self.cold:>9,.0f}   warm best {self.best:>9,.0f} changes/s "
            f"({1e6 / self.best:5.1f} us/change)   passes: {' '.join(f'{r / 1000:.0f}k' for r in self.warm)}"
        )


def memory_breakdown(conn: Conn, url: str, count: int) -> float:
    """Bytes per idle registered shape (tracemalloc), with the biggest allocation sites."""
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    start_mem = tracemalloc.get_traced_memory()[0]
    engine = new_engine(url)
    lives = register(engine, [user_shape(conn, 1_000_000 + u) for u in range(count)])
    gc.collect()
    after = tracemalloc.take_snapshot()
    used = tracemalloc.get_traced_memory()[0] - start_mem
    tracemalloc.stop()
    per_shape = used / count
    say(
        f"  tracemalloc, {count:,} idle shapes: {used / 2**20:.1f} MiB = {per_shape / 1024:.2f} KB/shape"
    )
    stats = after.compare_to(before, "lineno")
    say("  biggest allocation sites (bytes/shape):")
    for stat in stats[:14]:
        frame = stat.traceback[0]
        name = frame.filename
        for marker in ("site-packages/", "src/"):
            if marker in name:
                name = name.split(marker, 1)[1]
        say(f"    {stat.size_diff / count:8.0f}  {name}:{frame.lineno}")
    del engine, lives
    return per_shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--changes", type=int, default=200_000, help="changes per pass (indexed shapes)"
    )
    parser.add_argument(
        "--scan-changes", type=int, default=5_000, help="changes per pass (ILIKE shapes)"
    )
    parser.add_argument(
        "--repeats", type=int, default=4, help="warm passes per count (the best is reported)"
    )
    parser.add_argument("--txn-size", type=int, default=1, help="changes per transaction")
    parser.add_argument(
        "--counts",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=COUNTS,
        help="shape counts of the indexed passes, comma-separated (default 1,100,10000,100000)",
    )
    parser.add_argument(
        "--no-memory",
        action="store_true",
        help="skip memory per idle shape (on a loaded machine, building 100,000 shapes "
        "for it takes minutes)",
    )
    args = parser.parse_args()
    print(hot_path(), flush=True)
    counts: tuple[int, ...] = args.counts

    with temporary_cluster() as cluster:
        say(
            f"Postgres {cluster.bin_dir} on port {cluster.port}; Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs; {args.changes:,} changes per pass, {args.txn_size} per transaction"
        )
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DBNAME}")
        url = cluster.url(DBNAME)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE todos (id int PRIMARY KEY, user_id int, title text, done bool)"
            )
            relation = relation_of(conn)

            if not args.no_memory:
                say("\nmemory per idle shape (user_id = $1, registered, never touched)")
                traced = memory_breakdown(conn, url, 10_000)

            say("\nbuilding shapes (validate against the catalog, as Engine.shape does)")
            gc.collect()
            rss0 = rss_bytes()
            start = time.perf_counter()
            shapes = [user_shape(conn, u) for u in range(max(counts))]
            build_s = time.perf_counter() - start
            big_engine = new_engine(url)
            register(big_engine, shapes)
            gc.collect()
            rss_per_shape = (rss_bytes() - rss0) / len(shapes)
            say(
                f"  {len(shapes):,} shapes validated in {build_s:.1f}s ({build_s * 1e6 / len(shapes):.0f} us/shape)"
            )
            say(
                f"  RSS growth, {len(shapes):,} shapes built + registered: {rss_per_shape / 1024:.2f} KB/shape"
            )
            del big_engine

            say("\nindexed shapes: user_id = $1, each change touches one shape")
            benches = {
                count: Bench(
                    url,
                    relation,
                    shapes[:count],
                    args.changes,
                    args.txn_size,
                    _user_of(count),
                    f"{count:,} shape(s)",
                )
                for count in counts
            }
            del shapes
            for bench in benches.values():
                bench.cold_pass()
            # Warm passes interleaved (1, 100, 10k, 100k, 100k, 10k, ...): load from other
            # processes on the machine hits every count alike; the best pass counts.
            for r in range(args.repeats):
                for bench in list(benches.values()) if r % 2 == 0 else list(benches.values())[::-1]:
                    bench.warm_pass()
            for bench in benches.values():
                bench.report()
            rates = {count: bench.best for count, bench in benches.items()}
            del benches

            say(
                f"\nnon-indexable shapes: title ILIKE $1, each change matches one of {SCAN_SHAPES:,}"
            )
            scan = Bench(
                url,
                relation,
                [title_shape(conn, n) for n in range(SCAN_SHAPES)],
                args.scan_changes,
                args.txn_size,
                lambda i: (i, f"todo #{i % SCAN_SHAPES:05d}# x"),
                f"{SCAN_SHAPES:,} ILIKE shapes",
            )
            scan.cold_pass()
            for _ in range(2):
                scan.warm_pass()
            scan.report()
            scan_rate = scan.best

    most, fewest = max(counts), min(counts)
    ratio = rates[most] / rates[fewest]
    say("\nsummary")
    for count in counts:
        say(f"  {count:>7,} shapes: {rates[count]:>10,.0f} changes/s")
    say(f"  {SCAN_SHAPES:>7,} ILIKE shapes: {scan_rate:>10,.0f} changes/s")
    if not args.no_memory:
        say(
            f"  memory per idle shape: {traced / 1024:.2f} KB (tracemalloc, 10,000), "
            f"{rss_per_shape / 1024:.2f} KB (RSS, {most:,})"
        )
    say(f"routing ratio {most}/{fewest} shapes: {ratio:.2f}")


if __name__ == "__main__":
    main()
