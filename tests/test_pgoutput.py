"""The decoder against real pgoutput bytes, read with pg_logical_slot_get_binary_changes."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from pysync.postgres import pgoutput as pg
from pysync.postgres.pgoutput import UNCHANGED_TOAST, DecodeError, Decoder
from pysync.postgres.publication import ensure_publication, publish_table
from pysync.postgres.transactions import Change, Transaction, TransactionAssembler, Truncation

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        ensure_publication(conn, "pysync")
        yield conn


def make_slot(conn: Conn, name: str = "s", *, two_phase: bool = False) -> str:
    conn.execute(
        "SELECT pg_create_logical_replication_slot(%s, 'pgoutput', false, %s)", (name, two_phase)
    )
    return name


def changes(conn: Conn, slot: str, proto: int = 1, **options: str) -> list[pg.PgOutputMessage]:
    """Consume the slot's pending changes and decode every message."""
    # Abort records are not flushed at once and decoding stops at the flush position:
    # a committed transaction with an xid flushes everything before it.
    conn.execute("SELECT pg_current_xact_id()")
    args: list[str] = [
        "proto_version",
        str(proto),
        "publication_names",
        "pysync",
        "messages",
        "true",
    ]
    for key, value in options.items():
        args += [key, value]
    placeholders = ", ".join(["%s"] * len(args))
    rows = conn.execute(
        f"SELECT lsn::text, data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL, {placeholders})",
        (slot, *args),
    ).fetchall()
    decoder = Decoder(proto)
    return [decoder.decode(bytes(data)) for _, data in rows]  # type: ignore[call-overload]


def text_rows(conn: Conn, query: str) -> list[tuple[str | None, ...]]:
    """Rows exactly as Postgres' output functions write them (no Python adaptation)."""
    result = conn.execute(query).pgresult
    assert result is not None
    return [
        tuple(
            None if (v := result.get_value(r, c)) is None else bytes(v).decode()
            for c in range(result.nfields)
        )
        for r in range(result.ntuples)
    ]


def assemble(messages: list[pg.PgOutputMessage]) -> list[Transaction]:
    assembler = TransactionAssembler()
    out = []
    for msg in messages:
        item = assembler.feed(msg)
        if isinstance(item, Transaction):
            out.append(item)
    return out


ALL_TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE everything (
  id bigint PRIMARY KEY, i2 smallint, i4 integer, f4 real, f8 double precision,
  n numeric(10, 3), b boolean, t text, vc varchar(20), c char(5), u uuid, d date,
  tm time, ts timestamp, tstz timestamptz, iv interval, j json, jb jsonb, by bytea,
  ai int[], at text[], m mood, nested int[][]
)
"""

ROW = """
INSERT INTO everything VALUES (
  9007199254740993, -32768, 2147483647, 0.1, 1e300, 1234567.891, true, 'héllo "w" \\ ☃',
  'v', 'ab', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '2024-01-31', '13:45:00.5',
  '2024-01-31 13:45:00.123456', '2024-01-31 13:45:00.123456+02', '1 year 2 mons 3 days 04:05:06',
  '{"a": [1, 2]}', '{"b": 1, "a": 2}', '\\x00ff', '{1,NULL,3}', '{"a b",NULL,"c,d"}', 'happy',
  '{{1,2},{3,4}}'
), (2, NULL, NULL, 'NaN', '-Infinity', NULL, false, '', NULL, NULL, NULL, 'infinity', NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, '{}', NULL, NULL, NULL)
"""


def test_begin_relation_type_insert_commit_all_types(conn: Conn) -> None:
    conn.execute(ALL_TYPES)
    publish_table(conn, "pysync", "public", "everything")
    slot = make_slot(conn)
    conn.execute(ROW)
    msgs = changes(conn, slot)
    kinds = [type(m).__name__ for m in msgs]
    assert kinds[0] == "Begin" and kinds[-1] == "Commit"
    assert "Relation" in kinds and "Type" in kinds  # the enum is a non-builtin type
    rel = next(m for m in msgs if isinstance(m, pg.Relation))
    assert (rel.namespace, rel.name, rel.replica_identity) == ("public", "everything", "f")
    assert rel.column_names[:3] == ("id", "i2", "i4")
    type_msg = next(m for m in msgs if isinstance(m, pg.Type))
    assert (type_msg.namespace, type_msg.name) == ("public", "mood")
    begin, commit = msgs[0], msgs[-1]
    assert isinstance(begin, pg.Begin) and isinstance(commit, pg.Commit)
    assert begin.final_lsn == commit.commit_lsn and commit.end_lsn > commit.commit_lsn
    inserts = [m for m in msgs if isinstance(m, pg.Insert)]
    # Postgres' own text output with the same settings is the reference.
    conn.execute(
        "SET extra_float_digits = 1; SET IntervalStyle = 'iso_8601'; SET DateStyle = 'ISO, DMY'"
    )
    expected = text_rows(conn, "SELECT * FROM everything ORDER BY id DESC")
    # pgoutput writes with the walsender's settings; compare types whose output does not
    # depend on session settings.
    for got, want in zip(inserts, expected, strict=True):
        for name, g, w in zip(rel.column_names, got.new, want, strict=True):
            if name in ("f4", "f8", "iv"):
                continue
            assert g == w, name
    assert inserts[0].new[rel.column_names.index("at")] == '{"a b",NULL,"c,d"}'
    assert inserts[1].new[rel.column_names.index("i2")] is None
    assert inserts[1].new[rel.column_names.index("t")] == ""


def test_update_delete_with_old_key_and_old_row(conn: Conn) -> None:
    conn.execute(
        "CREATE TABLE k (id int PRIMARY KEY, v text); CREATE TABLE f (id int PRIMARY KEY, v text)"
    )
    conn.execute("ALTER PUBLICATION pysync ADD TABLE k")
    publish_table(conn, "pysync", "public", "f")  # REPLICA IDENTITY FULL
    conn.execute("INSERT INTO k VALUES (1, 'a'); INSERT INTO f VALUES (1, 'a')")
    slot = make_slot(conn)
    conn.execute("UPDATE k SET id = 2, v = 'b' WHERE id = 1")  # key change: old key sent
    conn.execute("UPDATE k SET v = 'c' WHERE id = 2")  # no key change: no old tuple
    conn.execute("UPDATE f SET v = 'b' WHERE id = 1")
    conn.execute("DELETE FROM k; DELETE FROM f")
    msgs = changes(conn, slot)
    updates = [m for m in msgs if isinstance(m, pg.Update)]
    deletes = [m for m in msgs if isinstance(m, pg.Delete)]
    assert (updates[0].old_kind, updates[0].old, updates[0].new) == ("K", ("1", None), ("2", "b"))
    assert (updates[1].old_kind, updates[1].old, updates[1].new) == (None, None, ("2", "c"))
    assert (updates[2].old_kind, updates[2].old, updates[2].new) == ("O", ("1", "a"), ("1", "b"))
    assert [(d.old_kind, d.old) for d in deletes] == [("K", ("2", None)), ("O", ("1", "b"))]
    txns = assemble(msgs)
    ops = [c.op for t in txns for c in t.changes if isinstance(c, Change)]
    assert ops == ["update", "update", "update", "delete", "delete"]


def test_unchanged_toast(conn: Conn) -> None:
    conn.execute("CREATE TABLE big (id int PRIMARY KEY, doc text, n int)")
    conn.execute("ALTER TABLE big ALTER doc SET STORAGE EXTERNAL")  # no compression: real TOAST
    conn.execute("CREATE TABLE bigfull (id int PRIMARY KEY, doc text, n int)")
    conn.execute("ALTER TABLE bigfull ALTER doc SET STORAGE EXTERNAL")
    conn.execute("ALTER PUBLICATION pysync ADD TABLE big")
    publish_table(conn, "pysync", "public", "bigfull")
    doc = "x" * 100_000
    conn.execute("INSERT INTO big VALUES (1, %s, 0)", (doc,))
    conn.execute("INSERT INTO bigfull VALUES (1, %s, 0)", (doc,))
    slot = make_slot(conn)
    conn.execute("UPDATE big SET n = 1; UPDATE bigfull SET n = 1")
    msgs = changes(conn, slot)
    plain, full = [m for m in msgs if isinstance(m, pg.Update)]
    assert plain.new == ("1", UNCHANGED_TOAST, "1") and plain.old is None
    assert full.new == ("1", UNCHANGED_TOAST, "1") and full.old == ("1", doc, "0")
    txns = assemble(msgs)
    filled = [c for t in txns for c in t.changes if isinstance(c, Change)]
    assert filled[1].new == ("1", doc, "1")  # taken from the old row
    assert (
        filled[0].new is not None and filled[0].new[1] is UNCHANGED_TOAST
    )  # nothing to fill it from


def test_truncate_several_tables_with_flags(conn: Conn) -> None:
    conn.execute("CREATE TABLE a (id serial PRIMARY KEY); CREATE TABLE b (id serial PRIMARY KEY)")
    conn.execute("ALTER PUBLICATION pysync ADD TABLE a, b")
    slot = make_slot(conn)
    conn.execute("INSERT INTO a DEFAULT VALUES; TRUNCATE a, b RESTART IDENTITY CASCADE")
    msgs = changes(conn, slot)
    trunc = next(m for m in msgs if isinstance(m, pg.Truncate))
    assert trunc.cascade and trunc.restart_identity and len(trunc.relation_oids) == 2
    (txn,) = assemble(msgs)
    truncation = txn.changes[-1]
    assert isinstance(truncation, Truncation)
    assert sorted(r.name for r in truncation.relations) == ["a", "b"]


def test_logical_messages_and_origin(conn: Conn) -> None:
    conn.execute("CREATE TABLE m (id int PRIMARY KEY)")
    publish_table(conn, "pysync", "public", "m")
    slot = make_slot(conn)
    conn.execute("SELECT pg_logical_emit_message(false, 'pysync-test', 'outside'::bytea)")
    conn.execute("SELECT pg_replication_origin_create('upstream')")
    with conn.transaction():
        conn.execute("SELECT pg_replication_origin_session_setup('upstream')")
        conn.execute("SELECT pg_replication_origin_xact_setup('0/10', now())")
        conn.execute("INSERT INTO m VALUES (1)")
        conn.execute("SELECT pg_logical_emit_message(true, 'pysync-test', 'inside')")
    conn.execute("SELECT pg_replication_origin_session_reset()")
    msgs = changes(conn, slot, origin="any")
    logical = [m for m in msgs if isinstance(m, pg.Message)]
    assert [(m.transactional, m.prefix, m.content) for m in logical] == [
        (False, "pysync-test", b"outside"),
        (True, "pysync-test", b"inside"),
    ]
    origin = next(m for m in msgs if isinstance(m, pg.Origin))
    assert origin.name == "upstream"
    assembler = TransactionAssembler()
    results = [assembler.feed(m) for m in msgs]
    assert isinstance(results[0], pg.Message)  # non-transactional: delivered at once
    (txn,) = [r for r in results if isinstance(r, Transaction)]
    assert txn.origin == "upstream" and [m.content for m in txn.messages] == [b"inside"]


def test_two_phase_commit_and_rollback(conn: Conn) -> None:
    conn.execute("CREATE TABLE p (id int PRIMARY KEY)")
    publish_table(conn, "pysync", "public", "p")
    slot = make_slot(conn, two_phase=True)
    conn.execute("BEGIN; INSERT INTO p VALUES (1); PREPARE TRANSACTION 'keep'")
    conn.execute("BEGIN; INSERT INTO p VALUES (2); PREPARE TRANSACTION 'drop'")
    first = changes(conn, slot, proto=3, two_phase="on")
    conn.execute("COMMIT PREPARED 'keep'")
    conn.execute("ROLLBACK PREPARED 'drop'")
    second = changes(conn, slot, proto=3, two_phase="on")
    kinds = [type(m).__name__ for m in first + second]
    assert {"BeginPrepare", "Prepare", "CommitPrepared", "RollbackPrepared"} <= set(kinds)
    prepare = next(m for m in first if isinstance(m, pg.Prepare))
    assert prepare.gid == "keep"
    assert [txn for txn in assemble(first)] == []  # nothing committed yet
    assembler = TransactionAssembler()
    done = [r for m in first + second if isinstance(r := assembler.feed(m), Transaction)]
    assert [[c.new for c in t.changes if isinstance(c, Change)] for t in done] == [[("1",)]]
    commit = next(m for m in second if isinstance(m, pg.CommitPrepared))
    assert done[0].commit_lsn == commit.commit_lsn and not assembler.prepared


def test_stream_prepare(conn: Conn) -> None:
    conn.execute("CREATE TABLE sp (id int PRIMARY KEY, pad text)")
    publish_table(conn, "pysync", "public", "sp")
    slot = make_slot(conn, two_phase=True)
    conn.execute(
        "BEGIN; INSERT INTO sp SELECT g, repeat('p', 100) FROM generate_series(1, 3000) g; "
        "PREPARE TRANSACTION 'big'"
    )
    conn.execute("SET logical_decoding_work_mem = '64kB'")
    msgs = changes(conn, slot, proto=3, streaming="on", two_phase="on")
    conn.execute("COMMIT PREPARED 'big'")
    msgs += changes(conn, slot, proto=3, streaming="on", two_phase="on")
    assert any(isinstance(m, pg.StreamPrepare) for m in msgs)
    (txn,) = assemble(msgs)
    assert len(txn.changes) == 3000


def test_unknown_message_names_byte_and_lsn() -> None:
    with pytest.raises(
        DecodeError, match=r"unknown pgoutput message type 'Z' \(byte 90\) at LSN 1/2A"
    ):
        Decoder().decode(b"Z\x00", (1 << 32) | 0x2A)
    with pytest.raises(DecodeError, match="malformed pgoutput message 'I': .* at LSN 0/10"):
        Decoder().decode(b"I\x00\x00", 0x10)
    with pytest.raises(DecodeError, match="unknown tuple value kind 'x'"):
        Decoder().decode(b"I\x00\x00\x00\x01N\x00\x01x", 0)
