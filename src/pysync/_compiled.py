"""Which implementation of the hot modules runs: mypyc-compiled or the pure-Python reference.

``setup.py`` compiles ``COMPILED_MODULES`` with mypyc where a C compiler exists (``pip install
-e .`` puts each ``.so`` beside its ``.py``, where Python's import prefers it) and records the
SHA-256 of every source it compiled in ``_compiled.json``. This module runs first when
``pysync`` is imported, before any of those modules, and decides for all of them at once
(compiled modules call each other natively, so they are never mixed with their sources):

* ``PYSYNC_IMPL=python``: the sources, even where compiled modules exist;
* a source that differs from the one compiled (an edited ``.py`` under an editable install):
  the sources, with a warning, instead of silently running the old code;
* no compiled modules (no compiler when installed, or a build failure): the sources;
* ``PYSYNC_IMPL=compiled``: the compiled modules or an ``ImportError`` (CI's compiled run
  must not test the sources twice).

``implementation()`` says which one runs, ``describe()`` why (``pysync serve`` and ``pysync
bench`` log it). Setting ``PYSYNC_IMPL`` after ``pysync`` is imported changes nothing.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Final, Literal

# The modules mypyc compiles: the per-change path (decode, route, append). The one list to
# update (setup.py reads it without importing pysync). A module whose code mypyc cannot
# compile as written stays out rather than being bent to fit: shapes/changes.py and
# shapes/consumer.py (their classes are weakly referenced, which mypyc's native classes do
# not support), postgres/transactions.py (AssemblyError subclasses RuntimeError).
COMPILED_MODULES: Final = (
    "pysync.postgres.pgoutput",
    "pysync.shapes.router",
    "pysync.shapes.collector",
    "pysync.log.log",
    "pysync.log.frames",
)

MANIFEST: Final = "_compiled.json"
ENV: Final = "PYSYNC_IMPL"

Implementation = Literal["compiled", "python"]

_PACKAGE_DIR: Final = os.path.dirname(os.path.abspath(__file__))
_log = logging.getLogger("pysync")


def source_path(module: str) -> str:
    """The ``.py`` of a compiled module, inside this package."""
    return os.path.join(_PACKAGE_DIR, *module.split(".")[1:]) + ".py"


def source_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _compiled_present(module: str) -> bool:
    stem = source_path(module)[: -len(".py")]
    return any(os.path.exists(stem + suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _why_not_compiled() -> str | None:
    """None when every compiled module is present and built from today's source."""
    try:
        with open(os.path.join(_PACKAGE_DIR, MANIFEST)) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return "not compiled (PYSYNC_BUILD=compiled pip install -e . compiles it)"
    except (OSError, ValueError) as exc:
        return f"not compiled: {MANIFEST} unreadable ({exc})"
    if "fallback" in manifest:
        return f"not compiled: {manifest['fallback']}"
    digests: dict[str, str] = manifest.get("modules", {})
    for module in COMPILED_MODULES:
        if module not in digests or not _compiled_present(module):
            return f"not compiled: {module} missing from the build (pip install -e . again)"
    for module in COMPILED_MODULES:
        if source_digest(source_path(module)) != digests[module]:
            relative = os.path.relpath(source_path(module), os.path.dirname(_PACKAGE_DIR))
            return (
                f"stale compiled modules: {relative} changed since they were built "
                "(PYSYNC_BUILD=compiled pip install -e . rebuilds them)"
            )
    return None


class _Sources:
    """A meta path finder that loads the hot modules from their ``.py`` files, ahead of the
    ``.so`` that the path finder would otherwise prefer."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in COMPILED_MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def _select() -> tuple[Implementation, str]:
    requested = os.environ.get(ENV, "")
    if requested not in ("", "python", "compiled"):
        raise ValueError(f"{ENV} must be 'python' or 'compiled' (or unset), not {requested!r}")
    if requested == "python":
        return "python", f"{ENV}=python"
    why = _why_not_compiled()
    if why is None:
        return "compiled", f"mypyc, {len(COMPILED_MODULES)} modules"
    if requested == "compiled":
        raise ImportError(f"{ENV}=compiled but {why}")
    if why.startswith("stale"):
        # Before logging is configured this reaches stderr through logging's last resort.
        _log.warning("pysync runs its pure-Python modules: %s", why)
    return "python", why


def _install() -> tuple[Implementation, str]:
    chosen, why = _select()
    if chosen == "python":
        sys.meta_path.insert(0, _Sources())
    return chosen, why


_CHOSEN, _WHY = _install()


def implementation() -> Implementation:
    """``"compiled"`` when the mypyc-compiled hot modules run, else ``"python"``."""
    return _CHOSEN


def describe() -> str:
    """Which implementation runs and why, for one log line."""
    return f"{_CHOSEN} ({_WHY})"
