"""Tables with generated columns: publishing them must never break the app's writes.

Postgres 18 refuses UPDATE and DELETE on a table whose REPLICA IDENTITY FULL (which
pysync sets) holds a generated column its publications do not publish. pysync's
publication publishes stored generated columns; a table with VIRTUAL generated columns
(never published) is refused with a 400 and left as it was."""

from __future__ import annotations

import json
from typing import Any

from http_support import Client, Conn, assert_invalid
from pysync.engine import Engine


async def test_app_writes_keep_working_on_a_table_with_stored_generated_columns(
    engine: Engine, client: Client, conn: Conn
) -> None:
    conn.execute(
        "CREATE TABLE priced (id int PRIMARY KEY, price int, doubled int GENERATED ALWAYS AS (price * 2) STORED)"
    )
    conn.execute("INSERT INTO priced VALUES (1, 10), (2, 20)")
    handle, offset, messages = await client.sync(table="priced", columns="id,price")
    assert sorted(m["value"]["id"] for m in messages if "value" in m) == ["1", "2"]
    # The app's own writes, after pysync published the table with REPLICA IDENTITY FULL.
    conn.execute("UPDATE priced SET price = 11 WHERE id = 1")
    conn.execute("DELETE FROM priced WHERE id = 2")
    seen: list[dict[str, Any]] = []
    for _ in range(10):
        response = await client.shape(
            table="priced", columns="id,price", handle=handle, offset=offset, live="true"
        )
        assert response.status_code == 200, response.text
        offset = response.headers["electric-offset"]
        seen += [
            m for m in response.json() if "value" in m or m.get("headers", {}).get("operation")
        ]
        if any(m["headers"].get("operation") == "delete" for m in seen):
            break
    assert [(m["headers"]["operation"], m["key"]) for m in seen] == [
        ("update", '"public"."priced"/"1"'),
        ("delete", '"public"."priced"/"2"'),
    ]
    assert seen[0]["value"] == {"id": "1", "price": "11"}
    assert "doubled" not in json.dumps(seen)


async def test_a_table_with_virtual_generated_columns_is_a_400_and_left_alone(
    engine: Engine, client: Client, conn: Conn
) -> None:
    conn.execute(
        "CREATE TABLE shown (id int PRIMARY KEY, price int, label text GENERATED ALWAYS AS (price::text) VIRTUAL)"
    )
    conn.execute("INSERT INTO shown VALUES (1, 10)")
    response = await client.shape(table="shown", columns="id,price", offset="-1")
    assert_invalid(
        response,
        {
            "table": [
                'Table "public"."shown" has virtual generated columns (label): Postgres cannot replicate its '
                "updates and deletes with REPLICA IDENTITY FULL, which shapes need. Make them STORED "
                "generated columns to sync this table"
            ]
        },
    )
    # Nothing was changed on the table: the app can still write it.
    assert conn.execute("SELECT relreplident FROM pg_class WHERE relname = 'shown'").fetchone() == (
        "d",
    )
    conn.execute("UPDATE shown SET price = 11")
    conn.execute("DELETE FROM shown")
    # Also as a subquery's table.
    conn.execute("CREATE TABLE owned (id int PRIMARY KEY, shown_id int)")
    response = await client.shape(
        table="owned", where="shown_id IN (SELECT id FROM shown)", offset="-1"
    )
    assert response.status_code == 400, response.text
    assert "virtual generated columns (label)" in json.dumps(response.json())
