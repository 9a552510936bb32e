"""Build: the pure-Python package, plus mypyc-compiled twins of its hot modules.

The modules are those of ``pysync._compiled.COMPILED_MODULES`` (read from its source, nothing
of pysync is imported). The compiled part is asked for (``PYSYNC_BUILD=compiled``); without
a C compiler, or if mypyc or the compiler fails, the install goes on with the pure-Python
modules and says so in one line (``pip install -v`` shows it; at run time
``pysync.implementation()`` and ``pysync serve``'s log say which one runs).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import sysconfig
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
SELECTOR = os.path.join("src", "pysync", "_compiled.py")
MANIFEST = "_compiled.json"
GROUP = "pysync"
SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")
# The commands that build the extensions: pip's wheel and editable builds, and by hand.
BUILDS = {"bdist_wheel", "editable_wheel", "build", "build_ext", "install", "develop"}


def compiled_modules() -> list[str]:
    with open(os.path.join(HERE, SELECTOR)) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "COMPILED_MODULES"
            and node.value is not None
        ):
            return list(ast.literal_eval(node.value))
    raise SystemExit(f"{SELECTOR} has no COMPILED_MODULES")


def source(module: str) -> str:
    return os.path.join("src", *module.split(".")) + ".py"


def digest(path: str) -> str:
    with open(os.path.join(HERE, path), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fall_back(reason: str) -> None:
    print(f"pysync: installing the pure-Python modules only: {reason}", file=sys.stderr)


def mypyc_extensions(modules: list[str]) -> list[Extension]:
    # Only for a command that builds (pip runs setup.py for metadata first, twice).
    if not BUILDS.intersection(sys.argv[1:]):
        return []
    if os.environ.get("PYSYNC_BUILD") != "compiled":
        # Opt-in while CI runs the whole suite on the pure-Python modules only (the
        # compiled ones pass the agreement test and the hot modules' own tests).
        fall_back("set PYSYNC_BUILD=compiled to compile the hot path")
        return []
    try:
        from mypyc.build import mypycify

        # group_name: one shared library, pysync__mypyc, holds the compiled code of all of
        # them (they call each other natively), each module a small shim beside its .py.
        # Optional extras (sqlalchemy) are absent from the build environment: the checks
        # that only their types satisfy are off here (CI's mypy run keeps them).
        relaxed = ["--no-warn-unused-ignores", "--no-warn-return-any"]
        paths = [source(m) for m in modules]
        return list(mypycify([*relaxed, *paths], opt_level="3", group_name=GROUP))
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error
        fall_back(f"mypyc failed ({type(exc).__name__}: {exc})")
        return []


class OptionalBuildExt(build_ext):
    """Compiles what it can; a failure leaves the pure-Python package, never a failed install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, a compile or link error
            self._remove_outputs()
            fall_back(f"the C build failed ({type(exc).__name__}: {exc})")
            return self._fall_back(f"the C build failed: {type(exc).__name__}")
        self._remove_leftovers()
        self._manifest({"modules": {m: digest(source(m)) for m in compiled_modules()}})

    def _remove_leftovers(self) -> None:
        """In an editable install, the .so of a module taken off the list since the last
        build: Python would still import it instead of the .py."""
        if not self.inplace:
            return
        built = {os.path.abspath(self.get_ext_fullpath(ext.name)) for ext in self.extensions}
        for root, _, files in os.walk(os.path.join(HERE, "src", "pysync")):
            for name in files:
                path = os.path.join(root, name)
                if name.endswith(SUFFIX) and path not in built:
                    os.remove(path)

    def _fall_back(self, reason: str) -> None:
        self.extensions = self.distribution.ext_modules = []
        self._manifest({"fallback": reason})

    def _remove_outputs(self) -> None:
        for ext in self.extensions:
            path = self.get_ext_fullpath(ext.name)
            if os.path.exists(path):
                os.remove(path)

    def _manifest(self, content: dict[str, Any]) -> None:
        """pysync/_compiled.json: what was compiled from which source (pysync._compiled
        reads it), in the build tree and, for an editable install, beside the sources."""
        targets = {os.path.join(self.build_lib, "pysync", MANIFEST)}
        if self.inplace:
            build_py = self.get_finalized_command("build_py")
            targets.add(os.path.join(build_py.get_package_dir("pysync"), MANIFEST))
        for path in targets:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump(content, f, indent=1, sort_keys=True)


setup(
    ext_modules=mypyc_extensions(compiled_modules()),
    cmdclass={"build_ext": OptionalBuildExt},
)
