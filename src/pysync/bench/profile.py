"""``pysync bench --profile``: where the server's CPU goes during the sync phase.

py-spy samples the managed ``pysync serve`` (and the subscriber process) for the
seconds pgbench runs (``py-spy record --format raw --nonblocking``: the process is not
paused, so the figures are those of the unprofiled run within py-spy's own cost, which
it pays on its own core time). Each sampled stack is put in one stage of the pipeline:

- the threads' own work first: a stack under the HTTP server (``pysync/http``,
  uvicorn, httptools) is HTTP, including the log reads that build a response; one
  under log compaction is compaction; the flush thread's ``fsync`` / ``syncfs`` is
  flush;
- otherwise (the replication path) the innermost pysync frame decides: receiving
  (libpq's COPY and the XLogData header, ``postgres/replication.py``), decoding
  (``pgoutput.py``), assembling transactions (``transactions.py``), routing
  (``collector.py``, ``router.py``, WHERE clauses), converting and encoding a change
  for a shape (``changes.py``), appending it to the shape logs (``consumer.py``,
  ``log/``);
- the event loop itself (uvloop's C loop, asyncio) and anything else go to "other".

py-spy counts a thread blocked in a system call it cannot tell from running (a disk
read, an ``fsync``) as active; a thread waiting on a lock or a queue is idle and not
counted. Shares of the samples are therefore shares of the process's busy time, CPU and
disk waits alike; the run's CPU seconds per row change come from psutil, as always.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

STAGES = (
    "receive (libpq COPY, XLogData header)",
    "decode (pgoutput)",
    "assemble (transactions)",
    "route (collector, router, WHERE)",
    "convert/encode (per shape)",
    "append (shape logs)",
    "flush (fsync, syncfs, acknowledgements)",
    "compaction (log rewrite)",
    "HTTP (requests, responses, log reads)",
    "other (event loop, ingest glue)",
)
RECEIVE, DECODE, ASSEMBLE, ROUTE, CONVERT, APPEND, FLUSH, COMPACTION, HTTP, OTHER = STAGES

_WHOLE_STACK = (
    # (a frame's file or function starts with, stage): the first that any frame of
    # the stack matches wins, whatever the frame's depth.
    ("pysync/http/", HTTP),
    ("uvicorn/", HTTP),
    ("httptools/", HTTP),
    ("starlette/", HTTP),
    ("pysync/log/compaction.py", COMPACTION),
    ("pysync/shapes/compactor.py", COMPACTION),
    ("CompactionJob.", COMPACTION),  # a function's name (in pysync/log/log.py)
    ("pysync/shapes/store.py", FLUSH),
    ("pysync/shapes/flush.py", FLUSH),
)
_INNERMOST = (
    # (a frame's file starts with, stage): the innermost frame that matches decides.
    ("pysync/postgres/replication.py", RECEIVE),
    ("pysync/postgres/pgoutput.py", DECODE),
    ("pysync/postgres/transactions.py", ASSEMBLE),
    ("pysync/shapes/collector.py", ROUTE),
    ("pysync/shapes/router.py", ROUTE),
    ("pysync/shapes/subqueries/", ROUTE),
    ("pysync/where/", ROUTE),
    ("<string>", ROUTE),  # a compiled WHERE clause
    ("pysync/shapes/changes.py", CONVERT),
    ("pysync/shapes/consumer.py", APPEND),
    ("pysync/log/", APPEND),
)


def _file(frame: str) -> str:
    """``name (path:line)`` -> path."""
    start = frame.rfind(" (")
    return frame[start + 2 : frame.rfind(":")] if start >= 0 else ""


def stage(stack: list[str]) -> str:
    """The stage of one sampled stack (frames outermost first, as py-spy writes them)."""
    files = [_file(frame) for frame in stack]
    for prefix, name in _WHOLE_STACK:
        if any(f.startswith(prefix) for f in files) or any(f.startswith(prefix) for f in stack):
            return name
    for path in reversed(files):
        for prefix, name in _INNERMOST:
            if path.startswith(prefix):
                return name
    return OTHER


def breakdown(raw: str) -> dict[str, int]:
    """Samples per stage of py-spy's ``--format raw`` output (``frame;frame;... count``
    per line), every stage present (zero if none)."""
    counts: Counter[str] = Counter({name: 0 for name in STAGES})
    for line in raw.splitlines():
        stack, _, number = line.rstrip().rpartition(" ")
        if not stack or not number.isdigit():
            continue
        counts[stage(stack.split(";"))] += int(number)
    return {name: counts[name] for name in STAGES}


def top_frames(raw: str, count: int = 15) -> list[tuple[str, int]]:
    """The innermost frames that took most samples (what to look at next)."""
    leaves: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, number = line.rstrip().rpartition(" ")
        if stack and number.isdigit():
            leaves[stack.split(";")[-1]] += int(number)
    return leaves.most_common(count)


class PySpyMissing(Exception):
    pass


@dataclass
class Recording:
    """``py-spy record`` of one process for a number of seconds, in the background."""

    name: str
    pid: int
    path: Path
    proc: subprocess.Popen[bytes]

    def finish(self, timeout: float) -> str | None:
        """py-spy's raw stacks once it wrote them, or None if it failed (it says why on
        stderr, kept in ``<name>.py-spy.log``)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            return self.path.read_text()
        except OSError:
            return None


def record(name: str, pid: int, seconds: float, rate: int, out: Path) -> Recording:
    """Start ``py-spy record`` on ``pid`` for ``seconds``; raw stacks into ``out``."""
    binary = shutil.which("py-spy")
    if binary is None:
        raise PySpyMissing("--profile needs py-spy: pip install py-spy")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.pyspy.txt"
    log = open(out / f"{name}.py-spy.log", "wb")  # noqa: SIM115 - py-spy writes it until it ends
    with log:
        proc = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Recording(name, pid, path, proc)


def start(pids: dict[str, int | None], seconds: float, rate: int, out: Path) -> list[Recording]:
    """A recording of each process with a pid, for ``seconds``."""
    return [record(name, pid, seconds, rate, out) for name, pid in pids.items() if pid is not None]


def finish(
    recordings: list[Recording], summary: dict[str, object], timeout: float
) -> dict[str, object]:
    """The report's ``profile`` entry of the sync phase: per process, samples and shares
    per stage (the engine's in µs per row change ingested too, from its CPU seconds),
    and the innermost frames that took most samples; and each process's share of the
    machine's CPU during the load."""
    result: dict[str, object] = {}
    per_change = summary.get("engine_cpu_us_per_change")
    for recording in recordings:
        raw = recording.finish(timeout)
        if raw is None:
            result[recording.name] = {
                "error": f"py-spy wrote nothing (see {recording.name}.py-spy.log)"
            }
            continue
        entry: dict[str, object] = {"file": recording.path.name, "top": top_frames(raw)}
        if recording.name == "engine":
            samples = breakdown(raw)
            total = sum(samples.values())
            entry["samples"] = samples
            entry["shares"] = {k: v / total if total else None for k, v in samples.items()}
            if isinstance(per_change, float) and total:
                entry["us_per_change"] = {k: v / total * per_change for k, v in samples.items()}
        else:
            entry["samples_total"] = sum(n for _, n in top_frames(raw, 10**9))
        result[recording.name] = entry
    return result
