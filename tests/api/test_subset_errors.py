"""Subset requests Postgres cannot run: a LIMIT or OFFSET beyond a bigint is a 400 naming
it (it was Postgres' "bigint out of range" under ``where``, a string), and a clause that
fails on the rows is a 400 about the clause, its messages in a list as everywhere."""

from __future__ import annotations

import pytest

from http_support import Client, Conn, assert_invalid


@pytest.mark.parametrize("field", ["limit", "offset"])
async def test_limit_and_offset_beyond_a_bigint(client: Client, conn: Conn, field: str) -> None:
    handle, offset, _ = await client.sync(table="items", log="changes_only")
    params = {"table": "items", "log": "changes_only", "handle": handle, "offset": offset}
    response = await client.shape(
        **params, subset__order_by="id", **{f"subset__{field}": str(2**63)}
    )
    assert_invalid(
        response, {"subset": {field: ["must be less than or equal to 9223372036854775807"]}}
    )
    posted = await client.raw(
        "/v1/shape", "POST", params=params, json={field: 10**30, "order_by": "id"}
    )
    assert (
        posted.status_code == 400
    )  # a POST's errors are no-cache (Electric's matrix), not no-store
    assert posted.json() == {
        "message": "Invalid request",
        "errors": {"subset": {field: ["must be less than or equal to 9223372036854775807"]}},
    }
    largest = await client.shape(
        **params, subset__order_by="id", **{f"subset__{field}": str(2**63 - 1)}
    )
    assert largest.status_code == 200, largest.text


async def test_a_clause_failing_on_the_rows(client: Client, conn: Conn) -> None:
    handle, offset, _ = await client.sync(table="items", log="changes_only")
    response = await client.shape(
        table="items",
        log="changes_only",
        handle=handle,
        offset=offset,
        subset__where="n / (n - 2) > 0",
    )
    assert_invalid(
        response,
        {
            "subset": {
                "where": ["the clause fails on the table's rows: division_by_zero (SQLSTATE 22012)"]
            }
        },
    )
