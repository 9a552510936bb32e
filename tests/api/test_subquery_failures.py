"""A subquery whose clause fails on the rows (division by zero, a bad cast) is the
client's mistake, as for a shape's own clause: a quick 400 about the clause, not retries
for seconds and then a 409 that sends the client to fetch the same failure again."""

from __future__ import annotations

import time

import pytest

from http_support import Client, Conn, assert_invalid, data


@pytest.mark.parametrize(
    ("clause", "reason"),
    [
        ("id = 1 / (id - id)", "division_by_zero (SQLSTATE 22012)"),
        # Per row: a constant that fails (``'x'::int``) is a 400 when the clause is
        # planned, as in Postgres (tests/test_where_validation.py).
        ("id = ('x' || id::text)::int", "invalid_text_representation (SQLSTATE 22P02)"),
    ],
)
async def test_a_subquery_clause_failing_on_the_rows_is_a_400(
    client: Client, conn: Conn, clause: str, reason: str
) -> None:
    started = time.monotonic()
    response = await client.shape(
        table="items", offset="-1", where=f"n IN (SELECT id FROM other WHERE {clause})"
    )
    assert_invalid(response, {"where": [f"the clause fails on the table's rows: {reason}"]})
    assert time.monotonic() - started < 10  # it retried for about 20 s
    # Nested one level deeper, the same.
    nested = f"n IN (SELECT id FROM other WHERE id IN (SELECT id FROM other WHERE {clause}))"
    assert_invalid(
        await client.shape(table="items", offset="-1", where=nested),
        {"where": [f"the clause fails on the table's rows: {reason}"]},
    )
    # The same subquery fixed works (nothing of the failed one was kept).
    handle, _, messages = await client.sync(
        table="items", where="n IN (SELECT id FROM other WHERE id = 1)"
    )
    assert [m["value"]["id"] for m in data(messages)] == ["1"]
