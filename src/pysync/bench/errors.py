"""The one exception of ``pysync bench``: a problem the user can fix, said in one line."""

from __future__ import annotations


class BenchError(Exception):
    """A bad option or an unusable target; the message says what to fix."""
