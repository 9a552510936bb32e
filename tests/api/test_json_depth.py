"""JSON from a client nested beyond the limit (100 levels) is a 400 naming it: msgspec
raised RecursionError at about 1,000 levels of ``[``, which was a 500 with a traceback."""

from __future__ import annotations

import pytest

from http_support import Client, Conn, assert_invalid

TOO_DEEP = "JSON nested deeper than 100 levels"


@pytest.mark.parametrize("depth", [101, 1_000, 10_000])
async def test_subset_params_and_bodies_nested_too_deep(
    client: Client, conn: Conn, depth: int
) -> None:
    handle, offset, _ = await client.sync(table="items", log="changes_only")
    params = {"table": "items", "log": "changes_only", "handle": handle, "offset": offset}
    deep = "[" * depth + "]" * depth
    response = await client.shape(**params, subset__where="n = $1", subset__params=deep)
    assert_invalid(response, {"subset": {"params": [TOO_DEEP]}})
    posted = await client.raw(
        "/v1/shape",
        "POST",
        params=params,
        content='{"where": "n = $1", "params": {"1": ' + deep + "}}",
        headers={"content-type": "application/json"},
    )
    assert posted.status_code == 400
    assert posted.json() == {"error": "Invalid JSON in request body", "details": TOO_DEEP}


async def test_nesting_up_to_the_limit_is_read(client: Client, conn: Conn) -> None:
    handle, offset, _ = await client.sync(table="items", log="changes_only")
    params = {"table": "items", "log": "changes_only", "handle": handle, "offset": offset}
    nested = "[" * 99 + '"[[["' + "]" * 99  # 100 levels with the body; strings do not count
    posted = await client.raw(
        "/v1/shape",
        "POST",
        params=params,
        content='{"where": "id = $1", "params": {"1": "1"}, "ignored": ' + nested + "}",
        headers={"content-type": "application/json"},
    )
    assert posted.status_code == 200, posted.text
