"""What the ``pysync bench`` tests share: a tiny workload and the bench in a child process
(the ``scratch`` TMPDIR fixture is in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TINY = [
    "--scale",
    "1",
    "--duration",
    "2",
    "--warmup",
    "0",
    "--shapes",
    "12",
    "--subscribers",
    "5",
    "--marker-subscribers",
    "2",
    "--sample-interval",
    "0.25",
]


def bench(*args: str, tmp: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``pysync bench`` in a child process whose temporary files go under ``tmp``."""
    return subprocess.run(
        [sys.executable, "-m", "pysync.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TMPDIR": str(tmp)},
        check=False,
    )
