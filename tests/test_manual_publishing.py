"""Manual publishing (Electric's ``ELECTRIC_MANUAL_TABLE_PUBLISHING``): a role that owns
nothing replicates what a database owner published; pysync alters nothing."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
import pytest

from engine_runner import Conn, drop_slot, poll
from http_support import Client, assert_error, make_api
from pysync.engine import Engine
from pysync.postgres.slot import ReplicationError

pytestmark = pytest.mark.slow


def catalog(conn: Conn) -> list[tuple[object, ...]]:
    """What pysync must not change: the publication's tables, the tables' identities."""
    published = conn.execute(
        "SELECT 'published', schemaname || '.' || tablename FROM pg_publication_tables "
        "WHERE pubname = 'dbapub' ORDER BY 2"
    ).fetchall()
    identities = conn.execute(
        "SELECT relname, relreplident::text FROM pg_class "
        "WHERE relname IN ('items', 'other') ORDER BY 1"
    ).fetchall()
    options = conn.execute(
        "SELECT 'options', (to_jsonb(p) - 'oid')::text FROM pg_publication p "
        "WHERE pubname = 'dbapub'"
    ).fetchall()
    return published + identities + options


@pytest.fixture
def reader_url(database_url: str, conn: Conn) -> Iterator[str]:
    """As a database owner would set it up: a replicating role that may only SELECT."""
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, v text)")
    conn.execute("CREATE TABLE other (id int PRIMARY KEY, v text)")
    conn.execute("INSERT INTO items VALUES (1, 'a'); INSERT INTO other VALUES (1, 'b')")
    conn.execute("CREATE ROLE manualreader LOGIN REPLICATION PASSWORD 'pw'")
    conn.execute("GRANT SELECT ON items, other TO manualreader")
    conn.execute("CREATE PUBLICATION dbapub FOR TABLE items")
    conn.execute("ALTER TABLE items REPLICA IDENTITY FULL")
    try:
        yield psycopg.conninfo.make_conninfo(database_url, user="manualreader", password="pw")
    finally:
        conn.execute("DROP PUBLICATION IF EXISTS dbapub")
        drop_slot(conn, "manualslot")
        conn.execute("DROP OWNED BY manualreader; DROP ROLE manualreader")


async def test_published_table_served_others_get_electrics_error_nothing_altered(
    reader_url: str, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    before = catalog(conn)
    assert before[:3] == [("published", "public.items"), ("items", "f"), ("other", "d")]
    engine = Engine(
        reader_url,
        flush_interval=0.02,
        slot="manualslot",
        publication="dbapub",
        manual_publishing=True,
    )
    await engine.start()
    client = Client(make_api(engine))
    try:
        handle, offset, messages = await client.sync(table="items")
        assert [m["value"] for m in messages if "key" in m] == [{"id": "1", "v": "a"}]
        conn.execute("INSERT INTO items VALUES (2, 'c')")
        live = await client.shape(table="items", handle=handle, offset=offset, live="true")
        assert [m["value"] for m in live.json() if "key" in m] == [{"id": "2", "v": "c"}]

        missing = await client.shape(table="other", offset="-1")
        assert_error(
            missing,
            503,
            {
                "message": 'Database table "public.other" is missing from the publication '
                '"dbapub" and the ELECTRIC_MANUAL_TABLE_PUBLISHING setting prevents '
                "Electric from adding it"
            },
        )
        assert missing.headers["retry-after"] == "10"
        assert missing.headers["electric-internal-known-error"] == "true"
        # So is a subquery on it: the client is told, not sent to refetch the same.
        nested = await client.shape(
            table="items", where="id IN (SELECT id FROM other)", offset="-1"
        )
        assert nested.status_code == 503, nested.text
        assert nested.json() == missing.json()
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert (
            'ALTER TABLE "public"."other" REPLICA IDENTITY FULL; '
            'ALTER PUBLICATION "dbapub" ADD TABLE "public"."other";'
        ) in logged
        assert catalog(conn) == before

        # The owner publishes it but forgets the identity: Electric's next error.
        conn.execute("ALTER PUBLICATION dbapub ADD TABLE other")
        not_full = await client.shape(table="other", offset="-1")
        assert_error(
            not_full,
            503,
            {
                "message": 'Database table "public.other" does not have its replica identity set to FULL'
            },
        )
        conn.execute("ALTER TABLE other REPLICA IDENTITY FULL")
        _, _, rows = await client.sync(table="other")
        assert [m["value"] for m in rows if "key" in m] == [{"id": "1", "v": "b"}]

        # FULL taken away: warned of, not restored (the role could not, and must not).
        with caplog.at_level(logging.WARNING, logger="pysync"):
            conn.execute("ALTER TABLE items REPLICA IDENTITY DEFAULT")
            conn.execute("UPDATE items SET v = 'd' WHERE id = 1")
            await poll(lambda: "not restored" in " ".join(engine.warnings), 30, "the warning")
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert 'run ALTER TABLE "public"."items" REPLICA IDENTITY FULL' in logged
        assert "restoring" not in logged
        assert catalog(conn) == [
            ("published", "public.items"),
            ("published", "public.other"),
            ("items", "d"),
            ("other", "f"),
            before[-1],  # the publication's options, as the owner made them
        ]
    finally:
        await client.aclose()
        await engine.stop()


async def test_missing_publication_is_electrics_start_up_error(reader_url: str, conn: Conn) -> None:
    engine = Engine(reader_url, slot="manualslot", publication="nopub", manual_publishing=True)
    with pytest.raises(ReplicationError, match='^Publication "nopub" not found in the database'):
        await engine.start()
    assert conn.execute("SELECT count(*) FROM pg_publication").fetchone() == (1,)
