"""One process per directory: an OS file lock (``flock``) held while pysync uses it.

The lock dies with the process (also on SIGKILL), so a crashed pysync never blocks the
next one; the file holds the holder's PID, so a second instance can say who it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from pysync.private_files import make_dir, open_private


class DirectoryInUse(RuntimeError):
    def __init__(self, what: str, directory: Path, pid: int | None) -> None:
        holder = f"process {pid}" if pid else "another process"
        super().__init__(
            f"{what} {directory} is in use by {holder} (another pysync?). Stop it, or give "
            "this one its own directory."
        )
        self.directory = directory
        self.pid = pid


class DirectoryLock:
    def __init__(self, directory: Path, what: str = "directory", name: str = "pysync.lock") -> None:
        self.directory = directory
        self.what = what
        self.path = directory / name
        self._fd: int | None = None

    def acquire(self) -> None:
        make_dir(self.directory)
        fd = open_private(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DirectoryInUse(self.what, self.directory, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
