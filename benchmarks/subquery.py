#!/usr/bin/env python
"""Subquery benchmark: routing cost and move-in latency of 1,000 subquery shapes.

Run from the repository root::

    python benchmarks/subquery.py [--users 1000] [--moves 200] [--changes 50000] [--repeats 3]

Starts a private Postgres (``temporary_cluster``) and an in-process ``Engine`` (real
replication, in-memory logs). Tables: ``projects`` (2,000), ``memberships(user_id,
project_id, role)`` (3 projects per user), ``todos(id, project_id, title, done)`` (20,000
rows). One shape per user::

    todos WHERE project_id IN (SELECT project_id FROM memberships WHERE user_id = $1)

so 1,000 shapes and 1,000 dependencies (each found by the router's equality index on
``user_id``; each shape by the values of its view of its dependency).

**Move-in latency.** A writer thread commits todo updates (about 200 transactions/s)
and membership inserts/deletes of other users in the background. Then, ``--moves`` times,
one user's shape gets a live long-poll request through the HTTP API (``ShapeAPI``
in-process, httpx over ASGI) and a membership of that user in a project with 10 todos is
inserted; the latency is from the writer's ``execute`` returning to the response that
carries the move-in rows having been read by the client. p50/p99 reported. (The HTTP hop
is in-process; ``latency.py`` measures what a separate server process adds.)

**Routing.** Synthetic transactions of real ``Change`` structs in the replicated
relation layouts are fed to ``Engine.collector.apply`` (CPU time of this thread, as in
``routing.py``): 90% todo updates (a tenth of them moving the todo to another project:
old and new rows, ``REPLICA IDENTITY FULL``), 10% membership updates that change no
value (routed to and applied by the dependencies, no move). The same changes go to a
baseline engine with 1,000 plain shapes ``project_id IN (<the user's projects>)``
(constant lists: the same rows, found by the equality index). Best of ``--repeats``.

The last line printed is::

    subquery routing: X changes/s; move-in p99 Y ms
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import random
import statistics
import threading
import time
from typing import Any

import httpx
import psycopg

from hot_path import hot_path
from pysync.engine import Engine
from pysync.http.api import ShapeAPI
from pysync.log.log import ShapeLog
from pysync.log.memory_storage import MemoryStorage
from pysync.postgres.cluster import temporary_cluster
from pysync.postgres.pgoutput import Relation
from pysync.postgres.snapshot import SnapshotInfo
from pysync.postgres.transactions import Change, Transaction, Truncation
from pysync.shapes.consumer import LIVE, ShapeConsumer
from pysync.shapes.definition import ShapeDefinition, validate
from pysync.shapes.store import new_handle

WHERE = "project_id IN (SELECT project_id FROM memberships WHERE user_id = $1)"
PROJECTS = 2_000
TODOS = 20_000
PER_USER = 3


def say(text: str = "") -> None:
    print(text, flush=True)


def setup(conn: psycopg.Connection[Any], users: int, rng: random.Random) -> dict[int, list[int]]:
    conn.execute("CREATE TABLE projects (id int PRIMARY KEY, name text)")
    conn.execute(
        "CREATE TABLE memberships (user_id int, project_id int, role text, PRIMARY KEY (user_id, project_id))"
    )
    conn.execute(
        "CREATE TABLE todos (id int PRIMARY KEY, project_id int, title text, done bool NOT NULL DEFAULT false)"
    )
    conn.execute(
        f"INSERT INTO projects SELECT g, 'p' || g FROM generate_series(1, {PROJECTS + 2 * users}) g"
    )
    member: dict[int, list[int]] = {
        u: rng.sample(range(1, PROJECTS + 1), PER_USER) for u in range(1, users + 1)
    }
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO memberships VALUES (%s, %s, 'member')",
            [(u, p) for u, ps in member.items() for p in ps],
        )
    conn.execute(
        f"INSERT INTO todos SELECT g, 1 + g % {PROJECTS}, 'todo ' || g FROM generate_series(1, {TODOS}) g"
    )
    # 10 todos in each project the measured move-ins add (ids above PROJECTS)
    conn.execute(
        f"INSERT INTO todos SELECT {TODOS} + g, {PROJECTS} + 1 + (g - 1) / 10, 'moving ' || g "
        f"FROM generate_series(1, {20 * users}) g"
    )
    return member


class Background(threading.Thread):
    """Todo updates and other users' membership churn, until stopped."""

    def __init__(self, url: str, users: int, measured: set[int]) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.users = users
        self.measured = measured
        self.stop = threading.Event()
        self.commits = 0

    def run(self) -> None:
        rng = random.Random(7)
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                if rng.random() < 0.05:
                    user = rng.randint(1, self.users)
                    if user not in self.measured:
                        project = rng.randint(1, PROJECTS)
                        conn.execute(
                            "INSERT INTO memberships VALUES (%s, %s, 'churn') ON CONFLICT DO NOTHING",
                            (user, project),
                        )
                        conn.execute(
                            "DELETE FROM memberships WHERE user_id = %s AND project_id = %s AND role = 'churn'",
                            (user, project),
                        )
                else:
                    conn.execute(
                        "UPDATE todos SET title = title || 'x', done = NOT done WHERE id = %s",
                        (rng.randint(1, TODOS),),
                    )
                self.commits += 1
                time.sleep(0.005)


async def wait_live(lives: list[ShapeConsumer], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not all(live.state is LIVE or live.gone for live in lives):
        if time.monotonic() > deadline:
            raise SystemExit("shapes not ready in time")
        await asyncio.sleep(0.05)
    gone = [live for live in lives if live.gone]
    if gone:
        raise SystemExit(f"{len(gone)} shapes failed: {gone[0].reason}")


async def sync(http: httpx.AsyncClient, user: int) -> tuple[str, str, str]:
    params = {"table": "todos", "where": WHERE, "params[1]": str(user), "offset": "-1"}
    response = await http.get("/v1/shape", params=params)
    handle = response.headers["electric-handle"]
    while "electric-up-to-date" not in response.headers:
        params.update(offset=response.headers["electric-offset"], handle=handle)
        response = await http.get("/v1/shape", params=params)
    return handle, response.headers["electric-offset"], response.headers.get("electric-cursor", "")


async def measure_move_ins(engine: Engine, url: str, users: int, moves: int) -> list[float]:
    api = ShapeAPI(engine, long_poll_timeout=20)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(api.app()), base_url="http://bench", timeout=60
    )
    measured = list(range(1, moves + 1))
    background = Background(url, users, set(measured))
    background.start()
    latencies: list[float] = []
    conn: psycopg.Connection[Any] = await asyncio.to_thread(
        lambda: psycopg.connect(url, autocommit=True)
    )
    try:
        for n, user in enumerate(measured):
            handle, offset, cursor = await sync(http, user)
            params = {
                "table": "todos",
                "where": WHERE,
                "params[1]": str(user),
                "offset": offset,
                "handle": handle,
                "live": "true",
                "cursor": cursor,
            }
            project = PROJECTS + 1 + n
            request = asyncio.ensure_future(http.get("/v1/shape", params=params))
            await asyncio.sleep(0.01)  # the live request is waiting
            committed = await asyncio.to_thread(commit, conn, user, project)
            rows = 0
            while True:
                response = await request
                body = response.json()
                rows += sum(1 for m in body if m.get("headers", {}).get("is_move_in"))
                if rows >= 10:
                    break
                params.update(
                    offset=response.headers["electric-offset"],
                    cursor=response.headers.get("electric-cursor", ""),
                )
                request = asyncio.ensure_future(http.get("/v1/shape", params=params))
            latencies.append((time.perf_counter() - committed) * 1000)
    finally:
        background.stop.set()
        await asyncio.to_thread(background.join)
        await asyncio.to_thread(conn.close)
        await http.aclose()
    say(f"  background: {background.commits} commits during the measurement")
    return latencies


def commit(conn: psycopg.Connection[Any], user: int, project: int) -> float:
    """Insert the membership; when the commit returned."""
    conn.execute("INSERT INTO memberships VALUES (%s, %s, 'member')", (user, project))
    return time.perf_counter()


def synthetic(
    todos: Relation,
    memberships: Relation,
    member: dict[int, list[int]],
    changes: int,
    rng: random.Random,
    first_xid: int,
    first_lsn: int,
) -> list[Transaction]:
    """Transactions of 10 changes: todo updates (some moving project), membership
    updates changing no value."""
    txns: list[Transaction] = []
    batch: list[Change | Truncation] = []
    lsn = first_lsn
    users = list(member)
    for i in range(changes):
        if i % 10 == 9:
            user = rng.choice(users)
            row = (str(user), str(member[user][0]), "member")
            batch.append(
                Change("update", memberships, (str(user), str(member[user][0]), "owner"), row)
            )
        else:
            todo = rng.randint(1, TODOS)
            project = 1 + todo % PROJECTS
            new_project = rng.randint(1, PROJECTS) if i % 10 == 0 else project
            old = (str(todo), str(project), f"todo {todo}", "f")
            new = (str(todo), str(new_project), f"todo {todo}!", "t")
            batch.append(Change("update", todos, new, old))
        if len(batch) == 10:
            lsn += 1000
            txns.append(Transaction(first_xid + len(txns), lsn, lsn + 100, 0, batch, []))
            batch = []
    return txns


def cpu_apply(engine: Engine, txns: list[Transaction]) -> float:
    apply = engine.collector.apply
    gc.collect()
    start = time.thread_time()
    for txn in txns:
        apply(txn)
    return time.thread_time() - start


def baseline_engine(url: str, member: dict[int, list[int]]) -> Engine:
    """1,000 plain shapes with the same rows, ready, in an engine that is never started."""
    engine = Engine(url, storage_dir=None)
    snapshot = SnapshotInfo(xmin=1, xmax=1, xip=(), lsn=0)
    with psycopg.connect(url) as conn:
        for projects in member.values():
            where = f"project_id IN ({', '.join(str(p) for p in projects)})"
            shape = validate(conn, ShapeDefinition.create("todos", where=where))
            engine.registry.add(
                ShapeConsumer(new_handle(shape), shape, ShapeLog(MemoryStorage()), snapshot)
            )
    return engine


async def bench(args: argparse.Namespace) -> None:
    rng = random.Random(1)
    with temporary_cluster() as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        url = cluster.url("bench")
        with psycopg.connect(url, autocommit=True) as conn:
            member = setup(conn, args.users, rng)
        engine = Engine(url, flush_interval=0.05, snapshot_connections=4)
        await engine.start()
        try:
            started = time.perf_counter()
            lives = [
                await engine.shape(ShapeDefinition.create("todos", where=WHERE, params=[str(u)]))
                for u in range(1, args.users + 1)
            ]
            await wait_live(lives)
            say(
                f"{len(lives)} shapes ({len(engine.registry.subqueries)} dependencies) ready in "
                f"{time.perf_counter() - started:.1f} s"
            )

            say(f"move-in latency, {args.moves} membership inserts under a background load:")
            latencies = await measure_move_ins(engine, url, args.users, args.moves)
            p50 = statistics.median(latencies)
            p99 = sorted(latencies)[max(0, int(len(latencies) * 0.99) - 1)]
            say(f"  p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms")

            relation = next(live.relation for live in lives if live.relation is not None)
            deps = list(engine.registry.subqueries.by_key.values())
            dep_relation = next((d._bindings[k].relation for d in deps for k in d._bindings), None)
            if relation is None or dep_relation is None:
                raise SystemExit("no replicated relation seen")
            baseline = baseline_engine(url, member)
            # every user's projects as in the database now (the measured users gained one)
            sub_rates, base_rates = [], []
            for repeat in range(args.repeats):
                txns = synthetic(
                    relation,
                    dep_relation,
                    member,
                    args.changes,
                    random.Random(repeat),
                    10_000_000 + repeat * 100_000,
                    10**12 + repeat * 10**9,
                )
                sub_rates.append(args.changes / cpu_apply(engine, txns))
                base_rates.append(args.changes / cpu_apply(baseline, txns))
            sub, base = max(sub_rates), max(base_rates)
            say(f"routing, {args.changes} changes (best of {args.repeats}, CPU time):")
            say(f"  {args.users:,} subquery shapes: {sub:,.0f} changes/s")
            say(
                f"  {args.users:,} plain shapes (project_id IN (...)): {base:,.0f} changes/s (ratio {sub / base:.2f})"
            )
        finally:
            await engine.stop()
    say(f"python {platform.python_version()} on {platform.machine()}")
    say(f"subquery routing: {sub:,.0f} changes/s; move-in p99 {p99:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--moves", type=int, default=200)
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    print(hot_path(), flush=True)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
