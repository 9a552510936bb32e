"""A random write load on a table ``t(id, v, grp, title)`` from several connections,
and the WHERE clauses the consistency and fault tests check shapes of."""

from __future__ import annotations

import random
import threading

import psycopg

from engine_runner import Conn

COLUMNS = ["id", "v", "grp", "title"]
WHERES: list[str | None] = [
    None,
    "v < 50",
    "grp = 2",
    "grp IN (1, 3)",
    "title LIKE 'a%'",
    "v & 1 = 0",
    "v >= 20 AND grp <> 1",
    "title IS NULL OR v > 90",
]


def create_table(conn: Conn, rows: int) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int, grp int, title text)")
    conn.execute(
        "INSERT INTO t SELECT g, g %% 100, g %% 4, chr(97 + g %% 3) || g "
        "FROM generate_series(1, %s) g",
        (rows,),
    )


class Writers:
    """Threads with their own connections doing random transactions on ``t``. Thread
    ``n`` of ``k`` owns the ids congruent to ``n`` mod ``k`` (PK changes keep that)."""

    def __init__(self, url: str, count: int, start_ids: int, seed: int = 0) -> None:
        self.url = url
        self.count = count
        self.stop = threading.Event()
        self.transactions = 0
        self.errors: list[BaseException] = []
        self.next_id = start_ids + 1
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(n, random.Random(seed + n)), daemon=True)
            for n in range(count)
        ]
        self._owned = [[i for i in range(1, start_ids + 1) if i % count == n] for n in range(count)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join()
        if self.errors:
            raise self.errors[0]

    def _new_id(self, n: int) -> int:
        with self._lock:
            while self.next_id % self.count != n:
                self.next_id += 1
            new = self.next_id
            self.next_id += 1
            return new

    def _run(self, n: int, rnd: random.Random) -> None:
        owned = self._owned[n]
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.stop.is_set():
                    with conn.transaction():
                        for _ in range(rnd.randint(1, 4)):
                            self._op(conn, n, rnd, owned)
                    self.transactions += 1
        except BaseException as exc:  # noqa: BLE001 - re-raised by join()
            self.errors.append(exc)

    def _op(self, conn: Conn, n: int, rnd: random.Random, owned: list[int]) -> None:
        kind = rnd.random()
        if kind < 0.25 or len(owned) < 10:
            new = self._new_id(n)
            conn.execute(
                "INSERT INTO t VALUES (%s, %s, %s, %s)",
                (
                    new,
                    rnd.randrange(100),
                    rnd.randrange(4),
                    rnd.choice(["a", "b", None]) and rnd.choice("abc") + str(new),
                ),
            )
            owned.append(new)
        elif kind < 0.65:  # values move in and out of the WHERE clauses
            row = rnd.choice(owned)
            column, value = rnd.choice(
                [
                    ("v", rnd.randrange(100)),
                    ("grp", rnd.randrange(4)),
                    ("title", rnd.choice(["a", "b", "c"]) + str(row)),
                    ("title", None),
                ]
            )
            conn.execute(f"UPDATE t SET {column} = %s WHERE id = %s", (value, row))
        elif kind < 0.75:
            row = rnd.choice(owned)
            conn.execute("UPDATE t SET v = v + 1, grp = (grp + 1) %% 4 WHERE id = %s", (row,))
        elif kind < 0.85:  # primary-key change
            index = rnd.randrange(len(owned))
            new = self._new_id(n)
            conn.execute(
                "UPDATE t SET id = %s, v = %s WHERE id = %s",
                (new, rnd.randrange(100), owned[index]),
            )
            owned[index] = new
        else:
            row = owned.pop(rnd.randrange(len(owned)))
            conn.execute("DELETE FROM t WHERE id = %s", (row,))
