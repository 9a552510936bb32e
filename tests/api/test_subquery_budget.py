"""The rows subqueries hold in memory are bounded (``max_subquery_rows``): one request
of a few hundred ``IN (SELECT ...)`` over a large table took gigabytes (about 1 KiB a
row). A new subquery beyond the bound is a 503 naming it; the shapes already served, and
their subqueries' growth with their tables, are untouched."""

from __future__ import annotations

import asyncio
import time

from http_support import Client, Conn, EngineFactory, data, make_api


async def test_subqueries_beyond_the_row_budget_are_a_503(
    make_engine: EngineFactory, conn: Conn
) -> None:
    conn.execute("CREATE TABLE many (id int PRIMARY KEY, k int)")
    conn.execute("INSERT INTO many SELECT g, g FROM generate_series(1, 60) g")
    engine = await make_engine(max_subquery_rows=100)
    client = Client(make_api(engine))
    try:
        handle, offset, messages = await client.sync(
            table="items", where="n IN (SELECT k FROM many WHERE id > 0)"
        )
        assert sorted(m["value"]["id"] for m in data(messages)) == ["1", "2", "3"]
        # 60 rows held: 60 more are refused, whichever shape asks.
        for where in [
            "n IN (SELECT k FROM many WHERE id > 1)",
            "n IN (SELECT k FROM many WHERE id > 0) AND n IN (SELECT id FROM many WHERE k > 0)",
        ]:
            response = await client.shape(table="items", offset="-1", where=where)
            assert response.status_code == 503, response.text
            assert response.json() == {
                "message": (
                    "the subqueries of the shapes served hold more than 100 rows; use fewer or narrower "
                    "subqueries, or raise --max-subquery-rows"
                )
            }
            assert response.headers["retry-after"] == "10"
        # A small one fits; the first shape goes on following its table past the bound.
        small, _, _ = await client.sync(
            table="items", where="n IN (SELECT k FROM many WHERE id < 10)"
        )
        conn.execute("INSERT INTO many SELECT g, g FROM generate_series(61, 130) g")
        assert len(engine.registry.subqueries.by_key) == 2
        deadline = time.monotonic() + 30
        while sorted(len(d.rows) for d in engine.registry.subqueries.by_key.values()) != [9, 130]:
            assert time.monotonic() < deadline, "the served subquery stopped following its table"
            await asyncio.sleep(0.05)
        live = await client.shape(
            table="items",
            where="n IN (SELECT k FROM many WHERE id > 0)",
            handle=handle,
            offset=offset,
        )
        assert live.status_code == 200, live.text
    finally:
        await client.aclose()
