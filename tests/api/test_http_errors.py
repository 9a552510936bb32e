"""The 400s of ``/v1/shape`` (docs/shape-http-protocol.md section 1.6): exact bodies,
no-store caching, and the validation order (only the first failing stage is reported)."""

from __future__ import annotations

from typing import Any

from http_support import Client, assert_invalid

NOT_FOUND = (
    'Table "public"."nonexistent" does not exist. If the table name contains capitals or '
    "special characters you must quote it."
)

CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # Stage 1: casting and "offset is required".
    ("offset missing", {"table": "items"}, {"offset": ["can't be blank"]}),
    ("offset empty", {"table": "items", "offset": ""}, {"offset": ["can't be blank"]}),
    ("replica", {"table": "items", "offset": "-1", "replica": "half"}, {"replica": ["is invalid"]}),
    ("log", {"table": "items", "offset": "-1", "log": "some"}, {"log": ["is invalid"]}),
    ("plain params", {"table": "items", "offset": "-1", "params": "x"}, {"params": ["is invalid"]}),
    (
        "experimental_live_sse",
        {"table": "items", "offset": "-1", "experimental_live_sse": "maybe"},
        {"experimental_live_sse": ["is invalid"]},
    ),
    (
        "columns identifier",
        {"table": "items", "offset": "-1", "columns": '"ti"tle"'},
        {"columns": ['Invalid identifier with unescaped quote: ti"tle']},
    ),
    # An odd number of quotes does not split (Electric's regex), as upstream.
    (
        "columns odd quotes",
        {"table": "items", "offset": "-1", "columns": 'id,"ti"tle"'},
        {"columns": ['Invalid unquoted identifier contains special characters: id,"ti"tle"']},
    ),
    (
        "columns empty part",
        {"table": "items", "offset": "-1", "columns": "id,"},
        {"columns": ["Invalid zero-length delimited identifier"]},
    ),
    (
        "stage 1 reports all its fields",
        {"table": "items", "replica": "x", "log": "y"},
        {"offset": ["can't be blank"], "replica": ["is invalid"], "log": ["is invalid"]},
    ),
    # Stage 2: offset format.
    *[
        (
            f"offset {bad!r}",
            {"table": "items", "offset": bad, "handle": "h"},
            {"offset": ["has invalid format"]},
        )
        for bad in (
            "invalid",
            "10",
            "1_2_3",
            "0_-1",
            "10_32.1",
            "0_0 ",
            "-2",
            "_1",
            "1_",
            "now ",
            "-1_1",
        )
    ],
    # Stage 3: handle.
    (
        "handle required",
        {"table": "items", "offset": "0_0"},
        {"handle": ["can't be blank when offset != -1"]},
    ),
    (
        "handle empty",
        {"table": "items", "offset": "5_2", "handle": ""},
        {"handle": ["can't be blank when offset != -1"]},
    ),
    # Stage 4: live vs offset.
    (
        "live with -1",
        {"table": "items", "offset": "-1", "live": "true"},
        {"live": ["can't be true when offset == -1"]},
    ),
    (
        "live with -1_0",
        {"table": "items", "offset": "-1_0", "live": "true"},
        {"live": ["can't be true when offset == -1"]},
    ),
    (
        "live with now",
        {"table": "items", "offset": "now", "live": "true"},
        {"live": ["can't be true when offset is 'now'"]},
    ),
    # Stage 5: live_sse.
    (
        "live_sse without live",
        {"table": "items", "offset": "0_0", "handle": "h", "live_sse": "true"},
        {"live_sse": ["can't be true unless live is also true"]},
    ),
    (
        "experimental_live_sse without live",
        {"table": "items", "offset": "0_0", "handle": "h", "experimental_live_sse": "true"},
        {"live_sse": ["can't be true unless live is also true"]},
    ),
    # Stage 6: table.
    ("table missing", {"offset": "-1"}, {"table": ["can't be blank"]}),
    ("table empty", {"offset": "-1", "table": ""}, {"table": ["can't be blank"]}),
    (
        "table delimiters",
        {"offset": "-1", "table": "a.b.c"},
        {"table": ["Invalid relation identifier, too many delimiters: a.b.c"]},
    ),
    (
        "table zero-length",
        {"offset": "-1", "table": '""'},
        {"table": ["Invalid zero-length delimited identifier"]},
    ),
    (
        "table special",
        {"offset": "-1", "table": "1items"},
        {"table": ["Invalid unquoted identifier contains special characters: 1items"]},
    ),
    (
        "table special 2",
        {"offset": "-1", "table": "it-ems"},
        {"table": ["Invalid unquoted identifier contains special characters: it-ems"]},
    ),
    (
        "table quote",
        {"offset": "-1", "table": '"it"ems"'},
        {"table": ['Invalid identifier with unescaped quote: it"ems']},
    ),
    (
        "table too long",
        {"offset": "-1", "table": "t" * 64},
        {"table": ["Identifier is too long (max length is 63)"]},
    ),
    ("table unknown", {"offset": "-1", "table": "nonexistent"}, {"table": [NOT_FOUND]}),
    (
        "table quoted case",
        {"offset": "-1", "table": '"Items"'},
        {"table": [NOT_FOUND.replace("nonexistent", "Items")]},
    ),
    (
        "table schema unknown",
        {"offset": "-1", "table": "nope.items"},
        {"table": [NOT_FOUND.replace('"public"."nonexistent"', '"nope"."items"')]},
    ),
    # Stage 7: shape construction.
    (
        "columns missing pk",
        {"offset": "-1", "table": "items", "columns": "title"},
        {"columns": ["The list of columns must include all primary key columns, missing: id"]},
    ),
    (
        "columns unknown",
        {"offset": "-1", "table": "items", "columns": "id,invalid"},
        {"columns": ["The following columns are not found on the table: invalid"]},
    ),
    (
        "params key",
        {"offset": "-1", "table": "items", "where": "id = $1", "params[a]": "1"},
        {"params": ["Parameters can only use numbers as keys"]},
    ),
    (
        "params sequence",
        {"offset": "-1", "table": "items", "where": "id = $1", "params[2]": "1"},
        {"params": ["Parameters must be numbered sequentially, starting from 1"]},
    ),
]


async def check_all(
    client: Client, cases: list[tuple[str, dict[str, Any], dict[str, Any]]]
) -> None:
    """Every case against one engine (a database and engine per case would be slow)."""
    failures = []
    for name, query, errors in cases:
        response = await client.shape(**query)
        try:
            assert_invalid(response, errors)
        except AssertionError as exc:
            failures.append(f"{name}: {query} -> {response.status_code} {response.text} ({exc})")
    assert not failures, "\n".join(failures)


async def test_invalid_requests(client: Client) -> None:
    await check_all(client, CASES)


async def test_where_errors_and_accepted_offsets(client: Client) -> None:
    for where in ("nope = 1", "id = ", "title + 1 = 2", "lower(id) = 'a'", "id = $1"):
        r = await client.shape(offset="-1", table="items", where=where)
        assert r.status_code == 400, (where, r.text)
        body = r.json()
        assert set(body) == {"message", "errors"} and body["message"] == "Invalid request"
        assert list(body["errors"]) == ["where"], body
        (message,) = body["errors"]["where"]
        assert message.startswith("At location "), message
        assert r.headers["cache-control"] == "no-store"
    r = await client.shape(offset="-1", table="items", where="id + 1")
    assert r.json()["errors"]["where"][0].endswith("WHERE clause must return a boolean")
    # Offsets that parse: leading zeros, -1_0, <n>_inf (all after the handle check).
    handle = (await client.shape(offset="-1", table="items")).headers["electric-handle"]
    for offset in ("-1_0", "0_02", "0_inf", "00_0"):
        r = await client.shape(offset=offset, table="items", handle=handle)
        assert r.status_code == 200, (offset, r.text)
    # A blank where is no where.
    blank = await client.shape(offset="-1", table="items", where="")
    assert blank.headers["electric-handle"] == handle
    # Unquoted names are down-cased, quoted keep case, schema defaults to public.
    for table in ("ITEMS", "public.items", '"public"."items"', "Public.Items"):
        r = await client.shape(offset="-1", table=table)
        assert r.headers["electric-handle"] == handle, table


ORDER: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("1 before 2", {"offset": "bad", "replica": "x", "table": ""}, {"replica": ["is invalid"]}),
    ("2 before 3", {"offset": "0_x", "table": ""}, {"offset": ["has invalid format"]}),
    (
        "3 before 4",
        {"offset": "0_0", "live": "true", "live_sse": "true", "table": ""},
        {"handle": ["can't be blank when offset != -1"]},
    ),
    (
        "4 before 5",
        {"offset": "-1", "live": "true", "live_sse": "true", "table": ""},
        {"live": ["can't be true when offset == -1"]},
    ),
    (
        "5 before 6",
        {"offset": "0_0", "handle": "h", "live_sse": "true", "table": "a.b.c"},
        {"live_sse": ["can't be true unless live is also true"]},
    ),
    (
        "6 before 7",
        {"offset": "-1", "table": "nonexistent", "columns": "nope", "where": "nope"},
        {"table": [NOT_FOUND]},
    ),
    (
        "table lookup before columns",
        {"offset": "-1", "table": "nonexistent", "columns": "id,nope"},
        {"table": [NOT_FOUND]},
    ),
    (
        "columns before where",
        {"offset": "-1", "table": "items", "columns": "id,nope", "where": "nope = 1"},
        {"columns": ["The following columns are not found on the table: nope"]},
    ),
    (
        "stage 1 columns before offset format",
        {"offset": "bad", "table": "items", "columns": "a,"},
        {"columns": ["Invalid zero-length delimited identifier"]},
    ),
]


async def test_validation_order(client: Client) -> None:
    await check_all(client, ORDER)
