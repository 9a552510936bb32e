"""A test client of the shape protocol over real HTTP: follows one shape from ``-1``
through live long-polls, as the TS client's ``ShapeStream`` + ``Shape`` do, and records
everything it saw so fault tests can check it.

Every 200 body must be a JSON array (a broken body is recorded as an anomaly); 409 resets
the rows and follows the new handle; 5xx and connection errors are retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from typing import Any

import httpx


class Follower:
    def __init__(self, base_url: str, params: dict[str, str], *, name: str = "") -> None:
        self.base_url = base_url
        self.params = params
        self.name = name or params.get("where") or params["table"]
        self.rows: dict[str, dict[str, Any]] = {}
        self.handle: str | None = None
        self.offset = "-1"
        self.up_to_date = False
        self.cursor: str | None = None
        self.statuses: Counter[int] = Counter()
        self.refetches = 0
        self.anomalies: list[str] = []
        self.errors: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))

    def start(self) -> Follower:
        self._task = asyncio.create_task(self._run())
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._http.aclose()

    async def _run(self) -> None:
        while True:
            query = {**self.params, "offset": self.offset}
            # As the TS client: the handle a 409 named goes with the new -1 request too
            # (a cached -1 response of the old shape is then not what a proxy answers).
            if self.handle is not None:
                query["handle"] = self.handle
            if self.up_to_date:
                query["live"] = "true"
                if self.cursor is not None:
                    query["cursor"] = self.cursor
            try:
                response = await self._http.get(self.base_url, params=query)
            except httpx.HTTPError:
                await asyncio.sleep(0.2)  # down (restarting, killed): come back
                continue
            self.statuses[response.status_code] += 1
            status = response.status_code
            if status == 200:
                self._apply(response)
            elif status == 409:
                self.refetches += 1
                self.rows.clear()
                self.up_to_date = False
                self.offset = "-1"
                self.handle = response.headers.get("electric-handle")
                if self.handle is None:
                    self.anomalies.append("409 without electric-handle")
            elif status >= 500 or status == 429:
                await asyncio.sleep(min(float(response.headers.get("retry-after", "1")), 0.5))
            else:
                self.errors.append(f"{status}: {response.text}")
                return

    def _apply(self, response: httpx.Response) -> None:
        try:
            messages = json.loads(response.content) if response.content else []
        except ValueError as exc:
            at = getattr(exc, "pos", 0)
            self.anomalies.append(
                f"200 with a body that is not JSON ({exc}; {len(response.content)} bytes, "
                f"content-length {response.headers.get('content-length')}): "
                f"{response.content[:200]!r} ... {response.content[max(0, at - 300) : at + 300]!r}"
            )
            return
        if not isinstance(messages, list):
            self.anomalies.append(
                f"200 with a body that is not an array: {response.content[:200]!r}"
            )
            return
        handle = response.headers.get("electric-handle")
        if self.handle is not None and handle != self.handle and self.offset != "-1":
            self.anomalies.append(f"handle changed from {self.handle} to {handle} without a 409")
        self.handle = handle
        self.cursor = response.headers.get("electric-cursor", self.cursor)
        for message in messages:
            headers = message.get("headers", {})
            if headers.get("control") == "up-to-date":
                self.up_to_date = True
                continue
            if "key" not in message:
                continue
            key, op = message["key"], headers.get("operation")
            if op == "insert":
                self.rows[key] = dict(message["value"])
            elif op == "update":
                if key not in self.rows:
                    self.anomalies.append(f"update of a row it does not have: {message}")
                self.rows.setdefault(key, {}).update(message["value"])
            elif op == "delete" and self.rows.pop(key, None) is None:
                self.anomalies.append(f"delete of a row it does not have: {message}")
        self.offset = response.headers["electric-offset"]

    def check(self) -> None:
        assert not self.anomalies, f"{self.name}: {self.anomalies[:3]}"
        assert not self.errors, f"{self.name}: {self.errors[:3]}"


async def converge(
    followers: list[Follower], expected: Any, timeout: float = 60.0, what: str = "convergence"
) -> None:
    """Wait until every follower is up to date and holds ``expected(follower)``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        states = [(f, expected(f)) for f in followers]
        behind = [f for f, want in states if not (f.up_to_date and f.rows == want)]
        if not behind:
            return
        for f in followers:
            f.check()
        if loop.time() > deadline:
            f, want = next((f, w) for f, w in states if f in behind)
            missing = sorted(set(want) - set(f.rows))[:3]
            extra = sorted(set(f.rows) - set(want))[:3]
            wrong = [k for k in want if k in f.rows and f.rows[k] != want[k]][:3]
            raise AssertionError(
                f"{what}: {len(behind)} followers behind; {f.name}: up_to_date={f.up_to_date} "
                f"missing {missing} extra {extra} wrong {wrong} statuses {dict(f.statuses)}"
            )
        await asyncio.sleep(0.1)
