"""The replicating process of ``pysync serve --workers N``: runs the engine and the hub,
and N HTTP worker processes on the listening socket it bound.

A worker that dies is started again (after a pause that grows while it keeps dying);
SIGTERM or SIGINT stops the workers first (each answers its waiting long-polls and
closes), then the engine. If this process dies instead, each worker sees the hub's
socket close and stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import msgspec

from pysync.config import Settings
from pysync.engine import Engine
from pysync.serve.hub import Hub

log = logging.getLogger(__name__)

SETTINGS_ENV = "PYSYNC_WORKER_SETTINGS"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class _Worker:
    def __init__(
        self, number: int, command: list[str], sock: socket.socket, env: dict[str, str]
    ) -> None:
        self.number = number
        self.command = command
        self.sock = sock
        self.env = env
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> asyncio.subprocess.Process:
        self.process = await asyncio.create_subprocess_exec(
            *self.command,
            pass_fds=(self.sock.fileno(),),
            env=self.env,
        )
        return self.process

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def supervise(
    engine: Engine,
    settings: Settings,
    sock: socket.socket,
    database_url: str,
    announce: Callable[[], None],
) -> None:
    """Serve with ``settings.workers`` HTTP workers until SIGTERM or SIGINT."""
    directory = Path(tempfile.mkdtemp(prefix="pysync-hub-"))
    ready: set[int] = set()
    all_ready = asyncio.Event()
    stopping = asyncio.Event()

    def worker_ready(pid: int) -> None:
        ready.add(pid)
        if len(ready) >= settings.workers:
            all_ready.set()

    hub = Hub(engine, directory / "hub.sock", worker_ready)
    await hub.start()
    sock.listen(2048)
    worker_settings = msgspec.structs.replace(settings, database_url=database_url, workers=0)
    env = {**os.environ, SETTINGS_ENV: msgspec.json.encode(worker_settings, enc_hook=str).decode()}
    command = [
        sys.executable,
        "-m",
        "pysync.serve.worker",
        "--hub",
        str(hub.path),
        "--fd",
        str(sock.fileno()),
    ]
    workers = [_Worker(n, command, sock, env) for n in range(settings.workers)]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    runs = [asyncio.create_task(_keep_running(worker, stopping)) for worker in workers]
    try:
        waiting = asyncio.ensure_future(all_ready.wait())
        stop = asyncio.ensure_future(stopping.wait())
        await asyncio.wait(
            [waiting, stop], timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        waiting.cancel()
        if all_ready.is_set():
            announce()
        elif not stopping.is_set():
            log.error(
                "only %d of %d HTTP workers started in %.0f s",
                len(ready),
                settings.workers,
                READY_TIMEOUT,
            )
        await stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        stopping.set()
        await asyncio.gather(*(worker.stop() for worker in workers))
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        await hub.close()
        shutil.rmtree(directory, ignore_errors=True)


async def _keep_running(worker: _Worker, stopping: asyncio.Event) -> None:
    pause = 0.5
    while not stopping.is_set():
        process = await worker.start()
        code = await process.wait()
        if stopping.is_set():
            return
        log.warning(
            "HTTP worker %d (pid %d) exited with %s; starting it again",
            worker.number,
            process.pid,
            code,
        )
        await asyncio.sleep(pause)
        pause = min(pause * 2, 10.0)
