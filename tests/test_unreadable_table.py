"""A table the role sees in the catalog but may not read (no SELECT): its clients get
"does not exist", as for any table the role may not read; the operator's log says
what Postgres says, permission denied, and the GRANT to run."""

from __future__ import annotations

import logging

import psycopg
import pytest

from engine_runner import Conn
from http_support import Client, make_api
from pysync.engine import Engine

MISSING = (
    'Table "{schema}"."{table}" does not exist. If the table name contains capitals or '
    "special characters you must quote it."
)


async def test_a_table_without_select_is_explained_in_the_log_only(
    database_url: str, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    conn.execute("CREATE TABLE locked (id int PRIMARY KEY, token text)")
    conn.execute("CREATE TABLE locked_too (id int PRIMARY KEY)")
    conn.execute("CREATE TABLE open (id int PRIMARY KEY)")
    conn.execute("CREATE SCHEMA hidden; CREATE TABLE hidden.secrets (id int PRIMARY KEY)")
    conn.execute("CREATE ROLE nosel LOGIN REPLICATION PASSWORD 'pw'")
    conn.execute("GRANT SELECT ON open TO nosel")
    conn.execute("GRANT CREATE ON DATABASE " + conn.info.dbname + " TO nosel")
    try:
        url = psycopg.conninfo.make_conninfo(database_url, user="nosel", password="pw")
        engine = Engine(url, flush_interval=0.02, slot="nosel", publication="nosel")
        await engine.start()
        client = Client(make_api(engine))
        caplog.set_level(logging.WARNING)
        try:
            r = await client.shape(table="locked", offset="-1")
            assert r.status_code == 400
            # The client learns nothing it could not before: no role, no GRANT.
            assert r.json()["errors"] == {
                "table": [MISSING.format(schema="public", table="locked")]
            }
            said = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
            assert said == [
                'permission denied for table "public"."locked": role "nosel" may not read it '
                "(its shapes are refused as a table that does not exist); run GRANT SELECT ON "
                '"public"."locked" TO "nosel"'
            ]
            # Once per table, however often asked; in a subquery too.
            caplog.clear()
            for _ in range(2):
                again = await client.shape(
                    table="open",
                    offset="-1",
                    where="id IN (SELECT id FROM locked) OR id IN (SELECT id FROM locked_too)",
                )
                assert again.status_code == 400, again.text
                assert "nosel" not in again.text
            said = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
            assert [m.split(":")[0] for m in said] == [
                'permission denied for table "public"."locked_too"'
            ]
            # No USAGE on the schema: the role does not see the table; nothing to explain.
            caplog.clear()
            hidden = await client.shape(table="hidden.secrets", offset="-1")
            assert hidden.json()["errors"] == {
                "table": [MISSING.format(schema="hidden", table="secrets")]
            }
            assert not [rec for rec in caplog.records if "permission" in rec.getMessage()]
        finally:
            await client.aclose()
            await engine.stop()
    finally:
        conn.execute("DROP PUBLICATION IF EXISTS nosel")
        conn.execute(
            "SELECT pg_drop_replication_slot('nosel') FROM pg_replication_slots "
            "WHERE slot_name = 'nosel'"
        )
        conn.execute("REVOKE ALL ON DATABASE " + conn.info.dbname + " FROM nosel")
        conn.execute("DROP OWNED BY nosel; DROP ROLE nosel")
