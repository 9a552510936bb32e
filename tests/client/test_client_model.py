"""Model check: after a random workload of inserts, updates (including key changes and
rows moving in and out of a WHERE) and deletes, every materialised shape equals ``SELECT``."""

from __future__ import annotations

import os
import random
from decimal import Decimal
from typing import Any

from pysync.client import Client, Shape
from serve_support import Conn, Served, write

TRANSACTIONS = 400
CHECKS = 8


def expected(conn: Conn, where: str, columns: str) -> dict[str, dict[str, Any]]:
    cur = conn.execute(f"SELECT {columns} FROM m_items WHERE {where}")
    names = [c.name for c in cur.description or ()]
    return {f'"public"."m_items"/"{row[0]}"': dict(zip(names, row, strict=True)) for row in cur}


def random_transaction(rng: random.Random, ids: set[int], next_id: list[int]) -> list[str]:
    statements = []
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        if kind < 0.4 or len(ids) < 3:
            new = next_id[0] = next_id[0] + 1
            ids.add(new)
            statements.append(
                f"INSERT INTO m_items VALUES ({new}, {rng.randint(0, 5)}, 't{rng.randint(0, 99)}', "
                f"{Decimal(rng.randint(-999, 999)) / 100}, ARRAY['a{rng.randint(0, 3)}', NULL])"
            )
        elif kind < 0.8:
            victim = rng.choice(sorted(ids))
            column = rng.choice(["grp", "title", "n", "tags", "id"])
            if column == "id":  # a key change: delete + insert on the wire
                new = next_id[0] = next_id[0] + 1
                ids.discard(victim)
                ids.add(new)
                statements.append(f"UPDATE m_items SET id = {new} WHERE id = {victim}")
            else:
                value = {
                    "grp": str(rng.randint(0, 5)),
                    "title": f"'u{rng.randint(0, 99)}'",
                    "n": str(Decimal(rng.randint(-999, 999)) / 10),
                    "tags": "'{x,\"y z\"}'",
                }[column]
                statements.append(f"UPDATE m_items SET {column} = {value} WHERE id = {victim}")
        else:
            victim = rng.choice(sorted(ids))
            ids.discard(victim)
            statements.append(f"DELETE FROM m_items WHERE id = {victim}")
    return statements


async def test_materialised_shapes_equal_select_after_random_workload(
    served: Served, db: Conn
) -> None:
    seed = int(os.environ.get("PYSYNC_MODEL_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    db.execute(
        "CREATE TABLE m_items (id int PRIMARY KEY, grp int NOT NULL, title text, n numeric, tags text[])"
    )
    ids = set(range(1, 21))
    db.execute(
        "INSERT INTO m_items SELECT g, g % 6, 't' || g, g / 7.0, ARRAY['a', 'b'] FROM generate_series(1, 20) g"
    )
    db.execute("INSERT INTO m_items VALUES (0, 0, 'marker', 0, NULL)")  # in every shape
    views = [  # (where, columns, client options)
        ("true", "*", {}),
        ("grp < 3", "*", {"replica": "full", "sse": True}),
        ("grp >= 2 OR id = 0", "id, grp, title", {"columns": ["id", "grp", "title"]}),
    ]
    async with Client(served.url) as client, Client(served.url, sse=True) as sse_client:
        shapes: list[Shape] = []
        for where, _, options in views:
            view: dict[str, Any] = dict(options)  # type: ignore[call-overload]
            chosen = sse_client if view.pop("sse", False) else client
            shapes.append(await chosen.shape("m_items", where=where, timeout=60, **view))
        try:
            next_id = [100]
            for n in range(TRANSACTIONS):
                write(db, *random_transaction(rng, ids, next_id))
                if (
                    n % (TRANSACTIONS // CHECKS) == TRANSACTIONS // CHECKS - 1
                    or n == TRANSACTIONS - 1
                ):
                    # title: a column of every shape (an update of unselected columns is dropped)
                    marker = write(db, f"UPDATE m_items SET title = 'marker {n}' WHERE id = 0")
                    for shape, (where, columns, _) in zip(shapes, views, strict=True):
                        await shape.wait_for_txid(marker, timeout=60)
                        assert shape.rows == expected(db, where, columns), (seed, where)
        finally:
            for shape in shapes:
                await shape.close()
