"""``queryable_columns`` (Electric 1.6.10/1.7): the server's allow-list of the columns a
shape may sync and its subsets may reference. A subset naming another column is the 400
Electric gives for a column the table does not have."""

from __future__ import annotations

from typing import Any

import pytest

from http_support import BOTH_SERVERS, Client, Conn, assert_invalid

ALLOWED = {"table": "items", "queryable_columns": "id,n", "log": "changes_only"}


async def start(client: Client, **params: Any) -> dict[str, Any]:
    handle, offset, _ = await client.sync(**params)
    return {**params, "handle": handle, "offset": offset}


@BOTH_SERVERS
async def test_the_synced_columns_default_to_the_allow_list(client: Client, conn: Conn) -> None:
    _, _, messages = await client.sync(table="items", queryable_columns="n,id")
    rows = [m["value"] for m in messages if "value" in m]
    assert rows == [{"id": str(i), "n": str(i)} for i in (1, 2, 3)]
    # A column list within it narrows it; one beyond it is not on the table for this shape.
    _, _, messages = await client.sync(table="items", queryable_columns="id,n", columns="id")
    assert [m["value"] for m in messages if "value" in m] == [{"id": str(i)} for i in (1, 2, 3)]
    response = await client.shape(
        table="items", offset="-1", queryable_columns="id,n", columns="id,title"
    )
    assert_invalid(
        response, {"columns": ["The following columns are not found on the table: title"]}
    )


@BOTH_SERVERS
async def test_a_subset_may_reference_only_queryable_columns(client: Client, conn: Conn) -> None:
    params = await start(client, **ALLOWED)
    allowed = await client.shape(**params, subset__where="n > 1", subset__order_by="n DESC")
    assert allowed.status_code == 200, allowed.text
    assert [row["value"]["id"] for row in allowed.json()["data"]] == ["3", "2"]

    # Electric's message for a column the table lacks (parser.ex: "unknown reference").
    by_where = await client.shape(**params, subset__where="title = 'item 1'")
    assert_invalid(by_where, {"subset": {"where": ["At location 0: unknown reference title"]}})
    by_order = await client.shape(**params, subset__order_by="title", subset__limit="1")
    assert_invalid(by_order, {"subset": {"order_by": ["unknown reference title"]}})
    posted = await client.raw("/v1/shape", "POST", params=params, json={"where": "title <> ''"})
    assert posted.status_code == 400
    assert list(posted.json()["errors"]["subset"]) == ["where"]

    # Without the list the same subsets are served.
    open_params = await start(client, table="items", log="changes_only")
    served = await client.shape(**open_params, subset__where="title = 'item 1'")
    assert served.status_code == 200, served.text


@pytest.mark.parametrize(
    ("allowed", "message"),
    [
        (
            "n,title",
            "The list of queryable columns must include all primary key columns, missing: id",
        ),
        ("id,nope", "The following queryable columns are not found on the table: nope"),
    ],
)
async def test_a_bad_allow_list(client: Client, conn: Conn, allowed: str, message: str) -> None:
    response = await client.shape(table="items", offset="-1", queryable_columns=allowed)
    assert_invalid(response, {"queryable_columns": [message]})


async def test_a_bad_identifier(client: Client, conn: Conn) -> None:
    response = await client.shape(table="items", offset="-1", queryable_columns='id,"n')
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["queryable_columns"]


async def test_the_allow_list_makes_another_shape(client: Client, conn: Conn) -> None:
    plain, _, _ = await client.sync(table="items", columns="id,n")
    listed, _, _ = await client.sync(table="items", columns="id,n", queryable_columns="id,n")
    assert plain != listed  # one may be subset by title, the other not
    again, _, _ = await client.sync(table="items", columns="id,n", queryable_columns="n,id")
    assert again == listed
