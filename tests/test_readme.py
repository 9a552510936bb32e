"""The README's embedding example is a working app: extracted from README.md and run
against the test's database (its give endpoint interrupts from a worker thread). Its
Writer example refuses what is not the user's."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from http_support import until

README = Path(__file__).resolve().parent.parent / "README.md"


def embedding_example() -> str:
    text = README.read_text()
    section = text[text.index("## Embedded in a Starlette / FastAPI app") :]
    match = re.search(r"```python\n(# app\.py\n.*?)```", section, re.S)
    assert match, "the README's embedding section has no app.py example"
    return match.group(1)


async def test_the_readme_app_runs(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("PYSYNC_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.setenv("PYSYNC_LONG_POLL_TIMEOUT", "10")
    path = tmp_path / "readme_app.py"
    path.write_text(embedding_example())
    spec = importlib.util.spec_from_file_location("readme_app", path)
    assert spec is not None and spec.loader is not None
    module: Any = importlib.util.module_from_spec(spec)
    sys.modules["readme_app"] = module
    try:
        spec.loader.exec_module(module)
        app = module.app
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="http://app", timeout=60
            ) as http,
        ):
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(
                    """INSERT INTO members (list_id, "user") VALUES (1, 'ann'), (2, 'bob')"""
                )
                conn.execute(
                    "INSERT INTO todos (id, list_id, title, done) VALUES "
                    "(1, 1, 'a', false), (2, 1, 'b', true), (3, 2, 'c', false)"
                )
            ann, bob = {"x-user": "ann"}, {"x-user": "bob"}
            first = await http.get("/shapes/my-todos", params={"offset": "-1"}, headers=ann)
            assert first.status_code == 200
            assert sorted(m["value"]["id"] for m in first.json() if "key" in m) == ["1", "2"]
            assert (await http.get("/shapes/my-todos", params={"offset": "-1"})).status_code == 401
            open_todos = await http.get(
                "/shapes/open-todos", params={"offset": "-1", "where": "true"}
            )
            assert [m["value"] for m in open_todos.json() if "key" in m] == [
                {"id": "1", "title": "a"},
                {"id": "3", "title": "c"},
            ]
            # No open mount of Electric's API: members and todos are not served to anyone.
            for table in ("todos", "members"):
                everything = await http.get(
                    "/electric/v1/shape", params={"table": table, "offset": "-1"}
                )
                assert everything.status_code == 404
            # Bob syncs his todos and waits live; Ann adds him to her list.
            params = {"offset": "-1"}
            while True:
                response = await http.get("/shapes/my-todos", params=params, headers=bob)
                assert response.status_code == 200
                params = {
                    "offset": response.headers["electric-offset"],
                    "handle": response.headers["electric-handle"],
                }
                if "electric-up-to-date" in response.headers:
                    break
            live = asyncio.create_task(
                http.get("/shapes/my-todos", params={**params, "live": "true"}, headers=bob)
            )
            await until(lambda: module.sync.waiting == 1, timeout=30, what="a waiting request")
            assert (await http.post("/lists/2/members/ann", headers=ann)).status_code == 403
            added = await http.post("/lists/1/members/bob", headers=ann)
            assert added.json() == {"interrupted": 1}
            response = await live
            assert (
                response.status_code == 409
                and response.headers["electric-handle"] != params["handle"]
            )
            refetched = await http.get("/shapes/my-todos", params={"offset": "-1"}, headers=bob)
            assert refetched.headers["electric-handle"] == response.headers["electric-handle"]
            assert sorted(m["value"]["id"] for m in refetched.json() if "key" in m) == [
                "1",
                "2",
                "3",
            ]
    finally:
        sys.modules.pop("readme_app", None)


def writer_example() -> str:
    text = README.read_text()
    section = text[text.index("## The write path") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's write path section has no example"
    return match.group(1)


def todo(kind: str, original: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    relation = {"syncMetadata": {"relation": ["public", "todos"]}}
    if kind == "insert":
        return {"type": kind, "modified": changes, **relation}
    return {"type": kind, "original": original, "changes": changes, **relation}


async def test_the_readme_writer_refuses_what_is_not_the_users(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE todos (id int PRIMARY KEY, title text, done bool DEFAULT false, "
            "owner text NOT NULL);"
            "INSERT INTO todos VALUES (1, 'mine', false, 'ann'), (2, 'bobs', false, 'bob')"
        )
        before = conn.execute("SELECT * FROM todos ORDER BY id").fetchall()
    # As written: the example defines its app, auth and DATABASE_URL (from the environment).
    monkeypatch.setenv("DATABASE_URL", database_url)
    example: dict[str, Any] = {"__name__": "readme_writer"}
    exec(compile(writer_example(), "README.md", "exec"), example)
    app = example["app"]
    assert isinstance(app, Starlette)
    ann = {"x-user": "ann"}
    lie = {"id": 2, "title": "bobs", "owner": "ann"}  # todo 2 is Bob's
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://a") as http:
        anonymous = await http.post("/api/mutations", json=[todo("delete", {"id": 1})])
        assert anonymous.status_code == 401
        for attack, status in (
            (todo("update", lie, title="mine now"), 403),
            (todo("update", lie, owner="ann"), 403),
            (todo("delete", lie), 403),
            (todo("update", {"id": 1}, owner="bob"), 403),
            (todo("update", {"id": 1}, id=3), 403),
            (todo("update", {"id": 9, "owner": "ann"}, title="x"), 404),
        ):
            response = await http.post("/api/mutations", json=[attack], headers=ann)
            assert response.status_code == status, (attack, response.text)
            assert response.json()["mutation"] == 0
        form = await http.post(
            "/api/mutations",
            content=json.dumps([todo("update", lie, title="mine now")]),
            headers={**ann, "content-type": "text/plain"},
        )
        assert form.status_code == 415
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT * FROM todos ORDER BY id").fetchall() == before
        ok = await http.post(
            "/api/mutations",
            json=[todo("update", {"id": 1}, title="renamed"), todo("insert", id=3, title="new")],
            headers=ann,
        )
        assert ok.status_code == 200, ok.text
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT id, title, owner FROM todos ORDER BY id").fetchall() == [
            (1, "renamed", "ann"),
            (2, "bobs", "bob"),
            (3, "new", "ann"),
        ]
