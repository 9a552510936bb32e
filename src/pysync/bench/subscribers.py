"""The simulated clients: live subscribers speaking Electric's HTTP Shape API.

Run by the bench as a child process (``python -m pysync.bench.subscribers CONFIG``), so
their CPU is not the sampler's and not the server's. Each subscriber is one keep-alive
HTTP connection doing what the TypeScript client does: ``offset=-1``, snapshot chunks to
``up-to-date``, then live requests (long-poll, or SSE with ``live_sse``); a 409 resets it
to ``-1`` with the new handle. It materialises rows as the client's ``Shape`` does
(insert sets, update merges, delete removes), keyed by the message key.

The process also creates the shapes nobody subscribes to (following each to up-to-date
once), and checks at the end that every subscriber holds exactly its shape's rows.

Protocol with the bench, one JSON object per line: it prints ``ready`` (every shape
created, every subscriber up to date), ``stats`` every 0.25 s (change messages
delivered since going live, responses, marker arrivals as (seq, CLOCK_MONOTONIC time)),
``check`` and ``final``, or ``error`` (then exits 1); it reads the commands ``check``
and ``stop`` on stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
import psycopg
from psycopg.types.string import TextLoader

from pysync.bench.httpclient import Connection, Endpoint, HttpError, Response
from pysync.bench.shapes import ShapeSpec

MISSING = "\x00missing"
"""Stands for a column a partially known row lacks (never equal to a real value)."""
_decode = msgspec.json.Decoder().decode


class SubscriberError(Exception):
    pass


def _offset_order(offset: str) -> tuple[int, float]:
    if offset == "-1":
        return (-1, 0)
    tx, _, op = offset.partition("_")
    return int(tx), float("inf") if op == "inf" else float(op)


class Totals:
    """What every subscriber adds to, read by the stats reporter."""

    def __init__(self) -> None:
        self.deliveries = 0
        self.responses = 0
        self.refetches = 0
        self.errors: list[str] = []
        self.arrivals: list[tuple[int, float]] = []


class Subscriber:
    def __init__(
        self,
        index: int,
        shape: ShapeSpec,
        endpoint: Endpoint,
        query: str,
        totals: Totals,
        *,
        sse: bool,
        marker: bool,
    ) -> None:
        self.index = index
        self.shape = shape
        self.conn = Connection(endpoint)
        self.query = query
        self.totals = totals
        self.sse = sse
        self.marker = marker
        self.rows: dict[str, dict[str, Any]] = {}
        self.handle = ""
        self.offset = "-1"
        self.cursor = ""
        self.live = False
        self.deliveries = 0
        self.synced = asyncio.Event()

    # -- materialising ------------------------------------------------------------------

    def _apply(self, messages: list[Any], arrived: float) -> bool:
        """Apply a batch; True if it ended up to date."""
        up_to_date = False
        rows = self.rows
        counted = 0
        for message in messages:
            headers = message.get("headers") or {}
            key = message.get("key")
            if key is None:
                control = headers.get("control")
                if control == "up-to-date":
                    up_to_date = True
                elif control == "must-refetch":
                    self._reset(None)
                    return False
                continue
            operation = headers.get("operation")
            value = message.get("value") or {}
            if operation == "insert":
                rows[key] = dict(value)
            elif operation == "update":
                existing = rows.get(key)
                if existing is None:
                    rows[key] = dict(value)
                else:
                    existing.update(value)
            elif operation == "delete":
                rows.pop(key, None)
            counted += 1
            if self.marker and self.live and operation != "delete" and "seq" in value:
                self.totals.arrivals.append((int(value["seq"]), arrived))
        if self.live:
            self.deliveries += counted
            self.totals.deliveries += counted
        return up_to_date

    def _reset(self, handle: str | None) -> None:
        self.rows.clear()
        self.offset = "-1"
        self.handle = handle or ""
        self.cursor = ""
        self.live = False
        self.totals.refetches += 1

    def values(self, columns: list[str]) -> set[tuple[Any, ...]]:
        return {tuple(row.get(c, MISSING) for c in columns) for row in self.rows.values()}

    # -- the protocol -------------------------------------------------------------------

    def _path(self, live: bool) -> str:
        path = f"{self.query}&offset={self.offset}"
        if self.offset != "-1":
            path += f"&handle={quote(self.handle)}"
        if live:
            path += "&live=true" + (f"&cursor={self.cursor}" if self.cursor else "")
            if self.sse:
                path += "&live_sse=true&experimental_live_sse=true"
        return path

    async def _status(self, response: Response) -> bool:
        """True for a 200 to process; resets on 409, waits on 429/503, raises otherwise."""
        status = response.status
        if status == 200:
            return True
        if status == 409:
            self._reset(response.headers.get("electric-handle"))
            return False
        if status == 204:  # older servers: a live request that timed out
            return False
        if status in (429, 503):
            try:
                wait = float(response.headers.get("retry-after", "1"))
            except ValueError:
                wait = 1.0
            await asyncio.sleep(min(wait, 10.0))
            return False
        raise SubscriberError(f"HTTP {status} {response.body[:200]!r}")

    async def run(self) -> None:
        try:
            while True:
                if self.live and self.sse:
                    await self._sse_request()
                    continue
                response = await self.conn.get(self._path(self.live))
                arrived = time.monotonic()
                self.totals.responses += 1
                if not await self._status(response):
                    continue
                headers = response.headers
                self.handle = headers.get("electric-handle", self.handle)
                self.offset = headers.get("electric-offset", self.offset)
                self.cursor = headers.get("electric-cursor", self.cursor)
                if self._apply(_decode(response.body) if response.body else [], arrived):
                    self._went_live()
        except asyncio.CancelledError:
            raise
        except (HttpError, SubscriberError, msgspec.DecodeError, KeyError, ValueError) as exc:
            self.totals.errors.append(f"subscriber {self.index} ({self.shape.describe()}): {exc}")
            raise
        finally:
            self.conn.close()

    def _went_live(self) -> None:
        if not self.live:
            self.live = True
            self.synced.set()

    async def _sse_request(self) -> None:
        status, headers, body = await self.conn.stream(
            self._path(True), {"Accept": "text/event-stream"}
        )
        self.totals.responses += 1
        if status != 200 or not headers.get("content-type", "").startswith("text/event-stream"):
            content = b"".join([piece async for piece in body])
            arrived = time.monotonic()
            response = Response(status, headers, content)
            if await self._status(response):  # a server that answered as a long-poll
                self.offset = headers.get("electric-offset", self.offset)
                self.cursor = headers.get("electric-cursor", self.cursor)
                self._apply(_decode(content) if content else [], arrived)
            return
        self.cursor = headers.get("electric-cursor", self.cursor)
        batch: list[Any] = []
        async for event in _sse_events(body):
            batch.append(event)
            event_headers = event.get("headers") or {}
            if "key" in event and "lsn" in event_headers:
                at = f"{event_headers['lsn']}_{event_headers.get('op_position', 0)}"
                if _offset_order(at) > _offset_order(self.offset):
                    self.offset = at
            if event_headers.get("control") == "up-to-date":
                # As the TypeScript client: the batch is delivered on up-to-date, and the
                # stream is resumed from the last seen LSN.
                seen = f"{event_headers.get('global_last_seen_lsn', 0)}_0"
                if _offset_order(seen) > _offset_order(self.offset):
                    self.offset = seen
                self._apply(batch, time.monotonic())
                batch = []


async def _sse_events(body: AsyncIterator[bytes]) -> AsyncIterator[Any]:
    buffer = b""
    async for piece in body:
        buffer += piece
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            data = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
            if data:
                yield _decode(b"\n".join(data))


async def _create(endpoint: Endpoint, query: str, semaphore: asyncio.Semaphore) -> int:
    """Follow a shape nobody subscribes to up to date once, so the server has it."""
    async with semaphore:
        conn = Connection(endpoint)
        offset, handle, rows = "-1", "", 0
        try:
            for _ in range(100_000):
                path = f"{query}&offset={offset}" + (
                    f"&handle={quote(handle)}" if offset != "-1" else ""
                )
                response = await conn.get(path)
                if response.status == 409:
                    offset, handle, rows = "-1", "", 0
                    continue
                if response.status in (429, 503):
                    await asyncio.sleep(1.0)
                    continue
                if response.status != 200:
                    raise SubscriberError(
                        f"creating {query}: HTTP {response.status} {response.body[:200]!r}"
                    )
                rows += sum(1 for m in _decode(response.body) if "key" in m) if response.body else 0
                offset = response.headers["electric-offset"]
                handle = response.headers["electric-handle"]
                if "electric-up-to-date" in response.headers:
                    return rows
            raise SubscriberError(f"creating {query}: never up to date")
        finally:
            conn.close()


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Fleet:
    """All subscribers of the run, and the commands of the bench."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.endpoint = Endpoint(config["server"])
        self.shapes = {
            s["id"]: ShapeSpec(s["id"], s["kind"], s["table"], tuple(s["params"]))
            for s in config["shapes"]
        }
        self.secret: str | None = config.get("secret")
        self.totals = Totals()
        marker = config["marker_shape"]
        self.subscribers = [
            Subscriber(
                i,
                self.shapes[shape_id],
                self.endpoint,
                self._query(self.shapes[shape_id]),
                self.totals,
                sse=config["live"] == "sse",
                marker=shape_id == marker,
            )
            for i, shape_id in enumerate(config["subscribers"])
        ]
        self.tasks: list[asyncio.Task[None]] = []

    def _query(self, shape: ShapeSpec) -> str:
        items = shape.query() + ([("secret", self.secret)] if self.secret else [])
        return "/v1/shape?" + urlencode(items, quote_via=quote)

    async def start(self) -> None:
        started = time.monotonic()
        subscribed = {s.shape.id for s in self.subscribers}
        semaphore = asyncio.Semaphore(16)
        creating = [
            asyncio.create_task(_create(self.endpoint, self._query(s), semaphore))
            for sid, s in self.shapes.items()
            if sid not in subscribed
        ]
        for i, subscriber in enumerate(self.subscribers):
            self.tasks.append(asyncio.create_task(subscriber.run()))
            if i % 100 == 99:
                await asyncio.sleep(0.05)  # do not overrun the server's listen backlog
        created = await asyncio.gather(*creating)
        waiting = [asyncio.create_task(s.synced.wait()) for s in self.subscribers]
        pending = set(waiting)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.5)
            failed = [t for t in self.tasks if t.done()]
            if failed:
                for task in pending:
                    task.cancel()
                raise SubscriberError(
                    self.totals.errors[0] if self.totals.errors else "a subscriber ended"
                )
        rows = sum(len(s.rows) for s in self.subscribers)
        _emit(
            "ready",
            seconds=time.monotonic() - started,
            created=len(created),
            created_rows=sum(created),
            subscribed_rows=rows,
        )

    async def report(self) -> None:
        totals = self.totals
        while True:
            await asyncio.sleep(0.25)
            arrivals, totals.arrivals = totals.arrivals, []
            _emit(
                "stats",
                t=time.monotonic(),
                deliveries=totals.deliveries,
                responses=totals.responses,
                refetches=totals.refetches,
                errors=len(totals.errors),
                arrivals=arrivals,
                error=totals.errors[0] if totals.errors else None,
            )

    async def check(self, timeout: float) -> None:
        """Until every subscriber holds exactly ``SELECT`` of its shape (or ``timeout``)."""
        started = time.monotonic()
        expected: dict[int, tuple[list[str], set[tuple[Any, ...]]]] = {}
        async with await psycopg.AsyncConnection.connect(
            self.config["database_url"], autocommit=True
        ) as conn:
            # Values as Postgres prints them, as the protocol carries them.
            for setting in (
                "DateStyle = 'ISO, DMY'",
                "TimeZone = 'UTC'",
                "extra_float_digits = 1",
                "IntervalStyle = 'iso_8601'",
                "bytea_output = 'hex'",
            ):
                await conn.execute("SET " + setting)
            oids = await conn.execute("SELECT oid FROM pg_type WHERE typtype IN ('b', 'e', 'd')")
            for (oid,) in await oids.fetchall():
                conn.adapters.register_loader(oid, TextLoader)
            for shape_id in {s.shape.id for s in self.subscribers}:
                query, params = self.shapes[shape_id].select()
                cur = await conn.execute(query, params)
                columns = [d.name for d in cur.description or []]
                expected[shape_id] = (columns, {tuple(r) for r in await cur.fetchall()})
        pending = list(self.subscribers)
        while pending and time.monotonic() - started < timeout:
            pending = [
                s for s in pending if s.values(expected[s.shape.id][0]) != expected[s.shape.id][1]
            ]
            if pending:
                await asyncio.sleep(0.2)
        mismatched = []
        for s in self.subscribers:  # once more, all of them: nothing may have moved since
            columns, rows = expected[s.shape.id]
            have = s.values(columns)
            if have != rows:
                mismatched.append(
                    {
                        "subscriber": s.index,
                        "shape": s.shape.describe(),
                        "expected_rows": len(rows),
                        "rows": len(have),
                        "missing": len(rows - have),
                        "extra": len(have - rows),
                    }
                )
        _emit(
            "check",
            ok=not mismatched,
            seconds=time.monotonic() - started,
            mismatched=mismatched[:10],
            mismatched_count=len(mismatched),
            rows_checked=sum(len(expected[s.shape.id][1]) for s in self.subscribers),
            deliveries=[s.deliveries for s in self.subscribers],
        )

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        _emit(
            "final",
            deliveries=[s.deliveries for s in self.subscribers],
            refetches=self.totals.refetches,
            errors=self.totals.errors[:10],
            cpu_seconds=time.process_time(),
        )


async def _commands() -> AsyncIterator[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield json.loads(line)


async def main(config_path: str) -> int:
    with open(config_path) as f:
        fleet = Fleet(json.load(f))
    reporter: asyncio.Task[None] | None = None
    try:
        await fleet.start()
        reporter = asyncio.create_task(fleet.report())
        async for command in _commands():
            if command["cmd"] == "check":
                await fleet.check(float(command["timeout"]))
            elif command["cmd"] == "stop":
                break
    except (SubscriberError, HttpError, psycopg.Error, OSError) as exc:
        _emit("error", message=str(exc))
        return 1
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        await fleet.stop()
    return 0


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of pysync
        sys.exit(asyncio.run(main(sys.argv[1])))
    sys.exit(uvloop.run(main(sys.argv[1])))
