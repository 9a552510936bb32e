"""Model check of partitioned tables: after a seeded random workload of inserts,
updates (rows moving between partitions too), deletes, partitions created, detached
and attached again, in transactions of one or several statements, a client of the
partitioned table's shapes and one client of each partition (detached ones included)
hold what ``SELECT`` returns. A client whose shape is invalidated refetches, as
Electric's clients do on a 409."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from engine_runner import Conn, quiesce, read_all, table_state
from pysync.engine import Engine
from pysync.shapes.consumer import ShapeConsumer, ShapeGone
from pysync.shapes.definition import ShapeDefinition
from test_partitions import strict

COLUMNS = ["id", "k", "v"]
PK = ["id", "k"]
RANGES = 6
"""Partitions m0..m5 hold k in [10 i, 10 i + 10); m0..m2 exist at the start."""


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Engine]:
    engine = Engine(database_url, flush_interval=0.02, schema_check_interval=0.5)
    await engine.start()
    yield engine
    await engine.stop()


class Client:
    """A client of one shape: refetches (a new shape, from its snapshot) when it is gone."""

    def __init__(self, table: str, **options: Any) -> None:
        self.table = table
        self.options = options
        self.consumer: ShapeConsumer | None = None
        self.refetches = 0

    async def check(self, engine: Engine, conn: Conn) -> None:
        for _ in range(5):  # a refetch may meet a 409 again, once the stream caught up
            if self.consumer is not None and not self.consumer.gone:
                break
            self.refetches += self.consumer is not None
            self.consumer = await engine.shape(ShapeDefinition.create(self.table, **self.options))
            with contextlib.suppress(ShapeGone):
                assert await self.consumer.wait(None, 30, until_snapshot=True)
        assert self.consumer is not None and not self.consumer.gone, self.consumer
        got = strict(read_all(self.consumer.log))
        where = self.options.get("where")
        want = table_state(conn, "public", self.table, COLUMNS, PK, where)
        assert got == want, (self.table, self.options)


class Workload:
    def __init__(self, conn: Conn, rng: random.Random) -> None:
        self.conn = conn
        self.rng = rng
        self.attached = {0, 1, 2}
        self.detached: set[int] = set()

    def _k(self, partitions: set[int]) -> int:
        return self.rng.choice(sorted(partitions)) * 10 + self.rng.randrange(10)

    def statement(self) -> tuple[str, tuple[Any, ...]] | None:
        """A random row change (None when there is nothing to do it on)."""
        rng = self.rng
        kind = rng.choice(["insert", "insert", "update", "move", "move", "delete", "detached"])
        if kind == "insert":
            return "INSERT INTO m VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", (
                rng.randrange(1, 25),
                self._k(self.attached),
                rng.choice("abcdef"),
            )
        if kind == "update":
            return "UPDATE m SET v = %s WHERE id = %s", (rng.choice("uvwxyz"), rng.randrange(1, 25))
        if kind == "move":  # to another partition (a new key, which may be taken)
            return "UPDATE m SET k = %s WHERE id = %s AND k / 10 = %s", (
                self._k(self.attached),
                rng.randrange(1, 25),
                rng.choice(sorted(self.attached)),
            )
        if kind == "delete":
            return "DELETE FROM m WHERE id = %s", (rng.randrange(1, 25),)
        if not self.detached:
            return None
        i = rng.choice(sorted(self.detached))  # a detached partition's own rows
        return f"INSERT INTO m{i} VALUES (%s, %s, 'd') ON CONFLICT DO NOTHING", (
            rng.randrange(1, 25),
            self._k({i}),
        )

    def ddl(self) -> tuple[str, int]:
        """A partition created, detached or attached again."""
        rng = self.rng
        choices = []
        fresh = set(range(RANGES)) - self.attached - self.detached
        if fresh:
            choices.append("create")
        if len(self.attached) > 1:
            choices.append("detach")
        if self.detached:
            choices.append("attach")
        kind = rng.choice(choices)
        if kind == "create":
            i = min(fresh)
            self.conn.execute(
                f"CREATE TABLE m{i} PARTITION OF m FOR VALUES FROM ({i * 10}) TO ({i * 10 + 10})"
            )
            self.attached.add(i)
        elif kind == "detach":
            i = rng.choice(sorted(self.attached))
            self.conn.execute(f"ALTER TABLE m DETACH PARTITION m{i}")
            self.attached.remove(i)
            self.detached.add(i)
        else:
            i = rng.choice(sorted(self.detached))
            self.conn.execute(
                f"ALTER TABLE m ATTACH PARTITION m{i} FOR VALUES FROM ({i * 10}) TO ({i * 10 + 10})"
            )
            self.detached.remove(i)
            self.attached.add(i)
        return kind, i

    def transaction(self) -> None:
        """One to four row changes in one transaction (a failed one rolls it back)."""
        statements = [s for s in (self.statement() for _ in range(self.rng.randint(1, 4))) if s]
        try:
            with self.conn.transaction():
                for query, params in statements:
                    self.conn.execute(query, params)
        except psycopg.errors.UniqueViolation:
            pass  # a move onto a key that is taken: nothing of it happened


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_workload(engine: Engine, conn: Conn, seed: int) -> None:
    rng = random.Random(seed)
    conn.execute(
        "CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k)"
    )
    for i in range(3):
        conn.execute(
            f"CREATE TABLE m{i} PARTITION OF m FOR VALUES FROM ({i * 10}) TO ({i * 10 + 10})"
        )
    conn.execute("INSERT INTO m SELECT g, g % 30, 'init' FROM generate_series(1, 20) g")
    work = Workload(conn, rng)
    clients = [Client("m"), Client("m", where="k < 25"), Client("m", replica="full")]
    clients += [Client(f"m{i}") for i in range(3)]
    for client in clients:
        await client.check(engine, conn)
    ddl = 0
    for step in range(1, 121):
        if rng.random() < 0.12:
            kind, i = work.ddl()
            ddl += 1
            if kind == "create":
                clients.append(Client(f"m{i}"))
        else:
            work.transaction()
        if step % 15 == 0:
            await quiesce(engine, conn)
            # what the WAL does not tell (a partition detached or attached) is found
            # by the schema check: as a client polling later would see it
            await engine.schema_check.check()
            await quiesce(engine, conn)
            for client in clients:
                await client.check(engine, conn)
    assert ddl >= 5
    assert sum(c.refetches for c in clients[:3]) > 0  # the root shapes did start over
