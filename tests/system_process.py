"""A system binary a test runs as its own process (nginx, pgbouncer): wait until it
listens, stop it by its PID."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable


def wait_listening(
    process: subprocess.Popen[bytes],
    port: int,
    name: str,
    log: Callable[[], str],
    timeout: float = 15.0,
) -> None:
    """Until ``process`` accepts on 127.0.0.1:``port``; its log in the failure if it
    exits or does not listen in ``timeout`` seconds (then it is stopped)."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}: {log()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                stop(process)
                raise AssertionError(f"{name} does not listen: {log()}") from None
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
