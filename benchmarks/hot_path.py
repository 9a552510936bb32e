"""The line every benchmark prints first: which of pysync's hot paths it measures (the
mypyc-compiled modules or the pure-Python ones, and why), so that no figure is read
without knowing (``PYSYNC_IMPL``; ``PYSYNC_BUILD=compiled pip install -e .`` builds them)."""

from __future__ import annotations

from pysync._compiled import describe


def hot_path() -> str:
    return f"hot path: {describe()}"
