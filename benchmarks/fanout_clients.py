"""benchmarks/fanout.py's clients: live long-poll connections on asyncio protocols, run in
child processes and driven through a pipe (ready, measure, reconnect, progress, results,
stop)."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import re
import resource
import time
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from fanout_server import HOST

SEQ = re.compile(rb'"seq":"(\d+)"')
HEADER = re.compile(
    rb"\r\n(electric-offset|electric-handle|electric-cursor|content-length|"
    rb"transfer-encoding|electric-up-to-date): ?([^\r]*)",
    re.IGNORECASE,
)


class Client(asyncio.Protocol):
    """One connection: sync the shape, then live requests, each sent when the previous
    response is read."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.buffer = bytearray()
        self.offset = "-1"
        self.handle = ""
        self.cursor = ""
        self.live = False
        self.transport: asyncio.Transport | None = None
        self.outstanding = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.buffer.clear()
        self.request()

    def request(self) -> None:
        path = f"/v1/shape?table=items&offset={self.offset}"
        if self.handle:
            path += f"&handle={self.handle}"
        if self.live:
            path += "&live=true"
            if self.cursor:
                path += f"&cursor={self.cursor}"
        assert self.transport is not None
        self.transport.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        self.outstanding = True
        if self.live:
            self.shared.waiting += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[: end + 2])
            headers = {m.group(1).lower(): m.group(2) for m in HEADER.finditer(head)}
            start = end + 4
            if b"content-length" in headers:
                stop = start + int(headers[b"content-length"])
                if len(self.buffer) < stop:
                    return
                body = bytes(self.buffer[start:stop])
            elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                body, stop = self._chunked(start)
                if stop < 0:
                    return
            else:
                body, stop = b"", start
            del self.buffer[:stop]
            self.response(int(head[9:12]), headers, body)

    def _chunked(self, position: int) -> tuple[bytes, int]:
        parts: list[bytes] = []
        while True:
            line_end = self.buffer.find(b"\r\n", position)
            if line_end < 0:
                return b"", -1
            size = int(bytes(self.buffer[position:line_end]).split(b";")[0], 16)
            chunk_start = line_end + 2
            if len(self.buffer) < chunk_start + size + 2:
                return b"", -1
            if size == 0:
                return b"".join(parts), chunk_start + 2
            parts.append(bytes(self.buffer[chunk_start : chunk_start + size]))
            position = chunk_start + size + 2

    def response(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        shared = self.shared
        now = time.perf_counter()
        self.outstanding = False
        if status == 409:
            # The shape is gone: start again from the handle the 409 names.
            if self.live:
                shared.waiting -= 1
            shared.refetches += 1
            self.offset, self.live, self.cursor = "-1", False, ""
            self.handle = headers.get(b"electric-handle", b"").decode()
            self.request()
            return
        if status == 503:
            # Admission control (or a restart): retry later, as the TS client does.
            if self.live:
                shared.waiting -= 1
            shared.retries += 1
            asyncio.get_running_loop().call_later(0.2, self.request)
            return
        if status != 200:
            shared.errors.append(f"HTTP {status} {body[:200]!r}")
            return
        self.offset = headers[b"electric-offset"].decode()
        self.handle = headers[b"electric-handle"].decode()
        if self.live:
            shared.waiting -= 1
            shared.responses += 1
            self.cursor = headers[b"electric-cursor"].decode()
            for match in SEQ.finditer(body):
                seq = int(match.group(1))
                if seq >= shared.measure_from:
                    shared.seqs.append(seq)
                    shared.times.append(now)
                if seq > shared.last_seq[self]:
                    shared.last_seq[self] = seq
        elif b"electric-up-to-date" in headers:
            self.live = True
            shared.synced += 1
            shared.last_seq[self] = 0
        self.request()

    def connection_lost(self, exc: Exception | None) -> None:
        shared = self.shared
        if shared.stopping:
            return
        if not shared.reconnect:
            shared.errors.append(f"connection lost: {exc}")
            return
        if self.outstanding and self.live:
            shared.waiting -= 1
        self.outstanding = False
        shared.reconnects += 1
        self.reconnect()

    def reconnect(self) -> None:
        """As a client whose server restarts: again after a random pause (up to 1 s)."""
        loop = asyncio.get_running_loop()

        async def connect() -> None:
            try:
                await loop.create_connection(lambda: self, HOST, self.shared.port)
            except OSError:
                self.shared.refused += 1
                self.reconnect()

        loop.call_later(random.uniform(0.0, 1.0), lambda: loop.create_task(connect()))


@dataclass
class Shared:
    measure_from: int = 1 << 62
    synced: int = 0
    waiting: int = 0
    responses: int = 0
    retries: int = 0
    refetches: int = 0
    reconnects: int = 0
    refused: int = 0
    port: int = 0
    reconnect: bool = False
    stopping: bool = False

    def __post_init__(self) -> None:
        self.seqs = array("q")
        self.times = array("d")
        self.errors: list[str] = []
        self.last_seq: dict[Client, int] = {}


def client_main(pipe: Connection, port: int, count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.run(_clients(pipe, port, count))
    except ImportError:
        asyncio.run(_clients(pipe, port, count))


async def _clients(pipe: Connection, port: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    shared = Shared(port=port)
    transports = []
    for start in range(0, count, 100):
        for _ in range(start, min(count, start + 100)):
            for attempt in range(20):
                try:
                    transport, _ = await loop.create_connection(lambda: Client(shared), HOST, port)
                    break
                except OSError:  # a full listen backlog: as a client would, again a bit later
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.5)
            transports.append(transport)
        await asyncio.sleep(0.02)
    deadline = time.monotonic() + 120
    while (
        (shared.synced < count or shared.waiting < count)
        and not shared.errors
        and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.05)
    pipe.send(("ready", shared.synced, shared.waiting, shared.errors[:3]))
    while True:
        while not pipe.poll():
            await asyncio.sleep(0.01)
        command, *args = pipe.recv()
        if command == "measure":
            shared.measure_from = args[0]
            del shared.seqs[:], shared.times[:]
            shared.responses = 0
            pipe.send(("ok",))
        elif command == "reconnect":
            shared.reconnect = True
            pipe.send(("ok",))
        elif command == "herd":
            pipe.send(
                (
                    shared.waiting,
                    shared.refetches,
                    shared.retries,
                    shared.refused,
                    shared.errors[:3],
                )
            )
        elif command == "progress":
            pipe.send(
                (min(shared.last_seq.values(), default=0), shared.responses, shared.errors[:3])
            )
        elif command == "results":
            pipe.send(
                (shared.seqs.tobytes(), shared.times.tobytes(), shared.responses, shared.errors[:3])
            )
        elif command == "stop":
            shared.stopping = True
            for transport in transports:
                transport.close()
            await asyncio.sleep(0.2)
            pipe.send(("stopped",))
            return


Children = list[tuple[multiprocessing.process.BaseProcess, Connection]]


def spawn_clients(label: str, n: int, port: int, args: argparse.Namespace) -> Children:
    """``n`` clients in ``--client-procs`` processes, each synced and waiting."""
    procs = max(1, min(args.client_procs, n // 100 or 1))
    ctx = multiprocessing.get_context("spawn")
    children: Children = []
    for k in range(procs):
        parent, child = ctx.Pipe()
        share = n // procs + (1 if k < n % procs else 0)
        proc = ctx.Process(target=client_main, args=(child, port, share), daemon=True)
        proc.start()
        children.append((proc, parent))
    for _, pipe in children:
        if not pipe.poll(180):
            stop_clients(children)
            raise RuntimeError(f"{label}: clients not ready")
        _, synced, waiting, errors = pipe.recv()
        if errors:
            stop_clients(children)
            raise RuntimeError(f"{label}: {errors}")
    return children


def stop_clients(children: Children) -> None:
    for proc, pipe in children:
        try:
            pipe.send(("stop",))
            if pipe.poll(10):
                pipe.recv()
        except (OSError, EOFError):
            pass
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    time.sleep(0.5)


def ask(children: Children, *command: object) -> list[Any]:
    answers = []
    for _, pipe in children:
        pipe.send(command)
        answers.append(pipe.recv())
    return answers
