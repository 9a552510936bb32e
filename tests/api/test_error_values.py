"""A clause that fails on a row answers 400 naming the clause and Postgres' error class,
never the row's value: Postgres' message quotes it (``invalid input syntax for type
integer: "<value>"``), maybe of a column the client was not given, and the logs at
INFO and above do not hold it either (nor the shape's params)."""

from __future__ import annotations

import logging

import pytest

from http_support import Client, Conn, assert_invalid

SECRET = "ann-note-x"
FAILS = "the clause fails on the table's rows: invalid_text_representation (SQLSTATE 22P02)"


@pytest.fixture
def note(conn: Conn) -> None:
    """A column the shapes below do not select, holding a value no client may read."""
    conn.execute("ALTER TABLE items ADD COLUMN note text")
    conn.execute("UPDATE items SET note = %s", (SECRET,))
    conn.execute("INSERT INTO other VALUES (2, %s)", (SECRET,))


def assert_not_logged(caplog: pytest.LogCaptureFixture, *values: str) -> None:
    for record in caplog.records:
        if record.levelno >= logging.INFO and record.name.startswith("pysync"):
            for value in values:
                assert value not in record.getMessage(), record.getMessage()


async def test_subset_clause_failing_on_a_hidden_column(
    client: Client, note: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    handle, offset, _ = await client.sync(table="items", columns="id,title", log="changes_only")
    response = await client.shape(
        table="items",
        columns="id,title",
        log="changes_only",
        handle=handle,
        offset=offset,
        subset__where="note::int = 1",
    )
    assert SECRET not in response.text
    assert_invalid(response, {"subset": {"where": [FAILS]}})
    assert_not_logged(caplog, SECRET)


async def test_shape_clause_failing_on_a_hidden_column(
    client: Client, note: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await client.shape(
        table="items", columns="id,title", offset="-1", where="note::int = $1", **{"params[1]": "7"}
    )
    assert SECRET not in response.text
    assert_invalid(response, {"where": [FAILS]})
    assert_not_logged(caplog, SECRET)
    # The failure's details are there for an operator who asks for DEBUG.
    assert any(SECRET in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


async def test_subquery_clause_failing_on_a_row(
    client: Client, note: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await client.shape(
        table="items", offset="-1", where="n IN (SELECT id FROM other WHERE v::int = 1)"
    )
    assert SECRET not in response.text
    assert_invalid(response, {"where": [FAILS]})
    assert_not_logged(caplog, SECRET)


async def test_a_param_the_clause_fails_on_is_not_logged(
    client: Client, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    param = "param-zz-17"
    response = await client.shape(
        table="items", offset="-1", where="n = ($1::text || title)::int", **{"params[1]": param}
    )
    assert param not in response.text
    assert_invalid(response, {"where": [FAILS]})
    assert_not_logged(caplog, param)
