"""The live path's parsed queries (``http/live_queries.py``): a shape's params parsed once
must never answer a request otherwise than the full parse (the app's) would.

Each test sends the same requests twice or more, so the later ones are read from the
cache, and checks them against what the app does with them.
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import psycopg

from pysync.http.api import ShapeAPI
from pysync.http.live_queries import LiveQueries
from pysync.http.parking import LivePolls
from test_live_path import Recorder, initial, items_engine, live_polls, until_async


def live_query(shape: dict[str, str], handle: str, offset: str, **extra: str) -> bytes:
    params = {**shape, "offset": offset, "handle": handle, "live": "true", **extra}
    return urlencode(params).encode()


async def test_shape_made_again_after_a_409_is_found_with_its_new_handle(
    database_url: str,
) -> None:
    async with live_polls(database_url) as (engine, api, polls, http):
        old, offset = await initial(http)
        query = live_query({"table": "items"}, old, offset)
        parked = Recorder()
        assert polls.take(parked, query, [])
        assert await engine.delete(old)
        await until_async(lambda: len(parked.sent) == 1)
        assert parked.sent[0].status_code == 409
        new, new_offset = await initial(http)  # the same definition, a new shape
        assert new != old
        # The old handle, as cached: handed to the app, whose 409 names the new shape.
        assert not polls.take(Recorder(), query, [])
        refused = await http.get(f"/v1/shape?{query.decode()}")
        assert refused.status_code == 409
        assert refused.headers["electric-handle"] == new
        again = Recorder()
        assert polls.take(again, live_query({"table": "items"}, new, new_offset), [])
        assert again.parked.consumer.handle == new
        polls.drop(again.parked)


async def test_shapes_differing_in_any_param_never_share_an_entry(database_url: str) -> None:
    async with items_engine(database_url) as engine:
        with psycopg.connect(database_url, autocommit=True) as db:
            db.execute("INSERT INTO items VALUES (2, 0)")
        api = ShapeAPI(engine, long_poll_timeout=20.0)
        polls = LivePolls(api)
        shapes = [
            {"table": "items"},
            {"table": "public.items"},  # another spelling, the same definition
            {"table": "items", "where": "id = $1", "params[1]": "1"},
            {"table": "items", "where": "id = $1", "params[1]": "2"},
            {"table": "items", "where": "id = 2"},
            {"table": "items", "columns": "id"},
            {"table": "items", "columns": "id,n"},
            {"table": "items", "replica": "full"},
            {"table": "items", "log": "changes_only"},
        ]
        handles = []
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(api.app()), base_url="http://t"
        ) as http:
            for shape in shapes:
                r = await http.get("/v1/shape", params={**shape, "offset": "-1"})
                assert r.status_code == 200, r.text
                handles.append((r.headers["electric-handle"], r.headers["electric-offset"]))
        # Equal shapes (however spelt) share one handle, as the registry keys them.
        assert handles[0][0] == handles[1][0]
        assert len({h for h, _ in handles}) >= 5
        for _ in range(3):  # the second and third rounds read the cache
            for shape, (handle, offset) in zip(shapes, handles, strict=True):
                conn = Recorder()
                assert polls.take(conn, live_query(shape, handle, offset), []), shape
                assert conn.parked.consumer.handle == handle, shape
                polls.drop(conn.parked)
                # And each refuses every other shape's handle (a 409, the app's).
                other = next(h for h, _ in handles if h != handle)
                assert not polls.take(Recorder(), live_query(shape, other, offset), []), shape
        assert len(polls._queries) == len(shapes)


async def test_the_secret_is_checked_for_every_request(database_url: str) -> None:
    async with live_polls(database_url, secret="s3cret") as (engine, api, polls, http):
        r = await http.get("/v1/shape", params={"table": "items", "offset": "-1"})
        assert r.status_code == 401
        handle, offset = await initial_with(http, {"secret": "s3cret"})
        shape = {"table": "items"}
        for _ in range(2):
            for given, taken in [
                ({"secret": "s3cret"}, True),
                ({"secret": "wrong"}, False),
                ({}, False),
                ({"api_secret": "s3cret"}, True),
                ({"api_secret": "s3cret", "secret": "wrong"}, False),
            ]:
                conn = Recorder()
                query = live_query(shape, handle, offset, **given)
                assert polls.take(conn, query, []) is taken, given
                if taken:
                    polls.drop(conn.parked)
                else:  # the app refuses it
                    assert (await http.get(f"/v1/shape?{query.decode()}")).status_code == 401
            # Percent-encoded names are the same params.
            encoded = f"table=items&offset={offset}&handle={handle}&live=true&s%65cret="
            assert not polls.take(Recorder(), (encoded + "wrong").encode(), [])
            conn = Recorder()
            assert polls.take(conn, (encoded + "s3cret").encode(), [])
            polls.drop(conn.parked)


async def initial_with(http: httpx.AsyncClient, extra: dict[str, str]) -> tuple[str, str]:
    r = await http.get("/v1/shape", params={"table": "items", "offset": "-1", **extra})
    assert r.status_code == 200, r.text
    return r.headers["electric-handle"], r.headers["electric-offset"]


async def test_encoded_names_of_changing_params_are_read_as_the_app_reads_them(
    database_url: str,
) -> None:
    async with live_polls(database_url) as (engine, api, polls, http):
        handle, offset = await initial(http)
        plain = f"table=items&offset={offset}&handle={handle}&live=true"
        encoded = f"table=items&off%73et={offset}&h%61ndle={handle}&live=true"
        # The last of repeated params wins, however spelt: an offset of -1 with live.
        overridden = plain + "&off%73et=-1"
        for _ in range(3):
            for query in (plain, encoded):
                conn = Recorder()
                assert polls.take(conn, query.encode(), []), query
                polls.drop(conn.parked)
            assert not polls.take(Recorder(), overridden.encode(), [])
        r = await http.get(f"/v1/shape?{overridden}")
        assert r.status_code == 400
        assert r.json()["errors"] == {"live": ["can't be true when offset == -1"]}


async def test_the_cache_is_bounded(database_url: str) -> None:
    async with items_engine(database_url) as engine:
        api = ShapeAPI(engine, long_poll_timeout=20.0)
        polls = LivePolls(api)
        polls._queries = LiveQueries(size=8)
        for i in range(30):  # parsed, but no such shape at hand: the app's
            shape = {"table": "items", "where": "id = $1", "params[1]": str(i)}
            assert not polls.take(Recorder(), live_query(shape, "h", "0_0"), [])
        assert len(polls._queries) == 8
