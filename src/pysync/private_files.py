"""Files only pysync's user reads: directories 0700, files 0600, whatever the umask.

Shape logs hold row values and the registry holds the shapes' params: another local
user must not read them. Modes are given explicitly and set with ``chmod`` (the umask
only ever takes bits away, so a created file is never looser than asked; the chmod makes
it exactly that). A directory or file found looser at start is tightened, said once in
the log. Only what pysync owns is touched: a parent directory is never changed.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
_OTHERS = 0o077
"""Group and other bits: none of them on pysync's files (the directories of a root
pysync's private Postgres are the exception: its server user traverses them)."""


def private_dir(path: Path, what: str, *, mode: int = DIR_MODE) -> None:
    """Create ``path`` as ``mode``, or tighten it (and what it holds) if it is looser."""
    if not make_dir(path, mode):
        tighten(path, what, mode=mode)


def make_dir(path: Path, mode: int = DIR_MODE) -> bool:
    """Create ``path`` as ``mode`` (missing parents too: pysync made them, they are
    its); False if it existed (it is left as it is)."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return False
    except FileNotFoundError:
        if path.parent == path:
            raise
        make_dir(path.parent, mode)
        try:
            os.mkdir(path, mode)
        except FileExistsError:  # made meanwhile by someone else
            return False
    os.chmod(path, mode)
    return True


def tighten(path: Path, what: str, *, mode: int = DIR_MODE, walk: bool = True) -> bool:
    """Make an existing directory ``mode``, and with ``walk`` everything under it
    private, if it was looser (a storage or data directory of an earlier version); True
    if it was."""
    found = stat.S_IMODE(os.lstat(path).st_mode)
    if not found & ~mode & 0o777:
        return False
    os.chmod(path, mode)
    for root, dirs, files in os.walk(path) if walk else ():
        for name in dirs:
            _tighten_one(Path(root, name), DIR_MODE)
        for name in files:
            _tighten_one(Path(root, name), FILE_MODE)
    log.warning(
        "%s %s was readable by other users (mode %o): made it %o%s",
        what,
        path,
        found,
        mode,
        f", its files {FILE_MODE:o}" if walk else "",
    )
    return True


def _tighten_one(path: Path, mode: int) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        return  # not ours to change: what it points to may be anywhere
    if stat.S_IMODE(info.st_mode) & ~mode & 0o777:
        os.chmod(path, stat.S_IMODE(info.st_mode) & mode)


def open_private(path: Path | str, flags: int) -> int:
    """``os.open`` creating the file 0600; a file found looser is made 0600."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & _OTHERS:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes) -> None:
    """Replace the contents of ``path`` (a small file) with ``data``, the file 0600."""
    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
