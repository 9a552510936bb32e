"""Test cases for Django's test runner (``manage.py test``) whose shape requests see the
test's writes.

- ``SyncTestCase``: a ``TransactionTestCase`` on the real engine. Each test's writes
  commit, so logical replication delivers them to the engine: the whole pipeline runs.
  The engine keeps its logs in memory and replicates from a temporary slot (dropped with
  its connection), so the test database can be dropped after the run.
- ``SandboxTestCase``: Django's ``TestCase`` (each test inside a transaction that is
  rolled back, which logical replication never sees) with the pysync sandbox
  (``pysync.django.sandbox``): the shapes its requests open are read inside the test's
  transaction, and every write through Django's connection reaches them as changes, with
  the test transaction's txid. Faster, and the database is left as it was.

    class TodoShapes(SandboxTestCase):
        def test_new_todo_is_synced(self):
            ...  # self.client.get("/shapes/open-todos/", {"offset": "-1"}) ...

Both serve only the requests of the test's own client (``self.client``,
``self.async_client``): Django runs their views' ORM calls on the test's thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from django.conf import settings
from django.test import TestCase, TransactionTestCase

from pysync.client.messages import ChangeMessage, ControlMessage, decode_batch
from pysync.django import engine
from pysync.django.sandbox import Sandbox
from pysync.django.sandbox_http import SandboxSync


class SyncTestCase(TransactionTestCase):  # type: ignore[misc]  # Django ships no types
    pysync_settings: ClassVar[dict[str, Any]] = {}
    """Settings over ``settings.PYSYNC`` for this class's engine."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        # The settings now name the test database: the Sync is made from them.
        engine.replace_sync(in_memory=True, temporary_slot=True, **cls.pysync_settings)

    @classmethod
    def tearDownClass(cls) -> None:
        engine.stop_blocking()
        super().tearDownClass()


class SandboxTestCase(TestCase):  # type: ignore[misc]  # Django ships no types
    """Django's ``TestCase`` whose shapes are served from each test's transaction."""

    pysync_database: ClassVar[str] = "default"
    """The database (alias) whose transaction the shapes are read in."""

    _pysync_sandbox: ClassVar[SandboxSync | None] = None
    _pysync_previous: ClassVar[Any] = None

    @classmethod
    def _pre_setup(cls) -> None:
        super()._pre_setup()  # the test's transaction is open from here
        cls._pysync_sandbox, cls._pysync_previous = start_sandbox(cls.pysync_database)

    def _post_teardown(self) -> None:
        stop_sandbox(self._pysync_sandbox, self._pysync_previous)
        type(self)._pysync_sandbox = None
        super()._post_teardown()

    async def wait_for_txid(
        self,
        txid: int | str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> dict[str, dict[str, Any]]:
        """Follow the shape at ``path`` (with the request ``headers``) with the test's
        ``async_client`` until transaction ``txid``'s changes are in it; its rows."""
        return await wait_for_txid(self.async_client, txid, path, headers=headers, timeout=timeout)


def start_sandbox(alias: str = "default") -> tuple[SandboxSync, Any]:
    """Serve the views' shapes from the current transaction on ``alias`` (on the test's
    thread, inside its transaction); returns the sandbox's Sync and the Sync it replaced
    (for ``stop_sandbox``)."""
    sandbox = Sandbox(alias)
    sandbox.start()
    options = getattr(settings, "PYSYNC", None) or {}
    # What the sandbox's responses depend on: the secret they require, how long a live
    # request waits.
    sync = SandboxSync(
        sandbox, **{k: options[k] for k in ("secret", "long_poll_timeout") if k in options}
    )
    return sync, engine.use(sync)


def stop_sandbox(sync: SandboxSync | None, previous: Any) -> None:
    """End the sandbox (before its transaction is rolled back); put back the Sync it
    replaced."""
    if sync is None:
        return
    sync.sandbox.stop()
    sync.close()
    engine.use(previous)


class TxidFollower:
    """Follows a shape route as a client does until transaction ``txid``'s changes are
    in it (or its snapshot holds them): ``params`` for the next request, ``take`` each
    response; ``rows`` by key."""

    def __init__(self, txid: int | str, path: str, timeout: float) -> None:
        self.txid = int(txid)
        self.path = path
        self.deadline = time.monotonic() + timeout
        self.rows: dict[str, dict[str, Any]] = {}
        self.params = {"offset": "-1"}
        self.seen = False

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"transaction {self.txid} never reached {self.path}")
        return left

    def take(self, response: Any) -> bool:
        """Apply a response; True once the transaction is in the rows, up to date."""
        if response.status_code == 409:
            self.rows, self.params, self.seen = {}, {"offset": "-1"}, False
            return False
        if response.status_code != 200:
            raise AssertionError(
                f"{self.path} answered {response.status_code}: {response.content!r}"
            )
        for message in decode_batch(response.content, {}):
            if isinstance(message, ChangeMessage):
                self.seen = self.seen or self.txid in message.headers.txids
                if message.headers.operation == "delete":
                    self.rows.pop(message.key, None)
                else:
                    self.rows[message.key] = {**self.rows.get(message.key, {}), **message.value}
            elif isinstance(message, ControlMessage) and message.control == "snapshot-end":
                self.seen = self.seen or _visible(message, self.txid)
        up_to_date = "electric-up-to-date" in response.headers
        self.params = {
            "offset": response.headers["electric-offset"],
            "handle": response.headers["electric-handle"],
        }
        if up_to_date:
            self.params["live"] = "true"
        return self.seen and up_to_date


async def wait_for_txid(
    client: Any,
    txid: int | str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> dict[str, dict[str, Any]]:
    """Follow the shape at ``path`` with Django's ``AsyncClient`` until the changes of
    transaction ``txid`` are in it (or its snapshot holds them); the rows, by key.
    TimeoutError after ``timeout`` seconds."""
    follower = TxidFollower(txid, path, timeout)
    while True:
        get = client.get(path, follower.params, headers=headers or {})
        if follower.take(await asyncio.wait_for(get, follower.remaining())):
            return follower.rows


def wait_for_txid_blocking(
    client: Any,
    txid: int | str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> dict[str, dict[str, Any]]:
    """``wait_for_txid`` with Django's (sync) test ``Client``: a live request returns
    within the long-poll timeout, then the deadline is checked."""
    follower = TxidFollower(txid, path, timeout)
    while True:
        follower.remaining()
        if follower.take(client.get(path, follower.params, headers=headers or {})):
            return follower.rows


def _visible(snapshot: ControlMessage, txid: int) -> bool:
    """Whether 32-bit xid ``txid`` is visible to ``snapshot`` (64-bit xmin/xmax), read
    as Postgres compares xids: within 2**31 of xmax."""
    xmin, xmax = int(snapshot.xmin or 0), int(snapshot.xmax or 0)
    distance = (txid - xmax) & 0xFFFFFFFF
    full = xmax + (distance - (1 << 32) if distance >= 1 << 31 else distance)
    return full < xmin or (full < xmax and str(full) not in snapshot.xip_list)
