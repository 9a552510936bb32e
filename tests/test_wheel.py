"""The package as a user installs it: the sdist and the wheel build (``python -m build``),
and the wheel, installed into a new virtual environment, has its entry point, its
``py.typed``, its pytest plugin, and runs the README's app and its tests from a directory
outside the checkout. Catches what an editable install hides (missing package data or
modules, a broken entry point)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from doc_blocks import ROOT, files_of

pytestmark = pytest.mark.slow

SKIPPED = shutil.ignore_patterns(
    ".git", "node_modules", "__pycache__", "*.egg-info", "build", "dist", ".pysync", ".*_cache"
)


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{args} exited with {done.returncode}:\n{output[-6000:]}"
    return output


def test_the_wheel_installs_and_runs_the_readme_app(tmp_path: Path) -> None:
    import pysync

    # No PYTHONPATH or settings of ours: only what the wheel installs is pysync.
    env = {
        name: value
        for name, value in os.environ.items()
        if name != "PYTHONPATH"
        and not name.startswith(("PYSYNC_", "PYTEST_"))
        and name != "DATABASE_URL"
    }
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=SKIPPED)
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--outdir", str(dist), str(checkout)], tmp_path, env)
    wheels = list(dist.glob("pysync-*.whl"))
    assert len(wheels) == 1 and len(list(dist.glob("pysync-*.tar.gz"))) == 1, list(dist.iterdir())
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
    assert "pysync/py.typed" in names and "pysync/testing.py" in names
    # The compiled hot path is opt-in (PYSYNC_BUILD=compiled): a default build is pure Python.
    assert "pysync/shapes/router.py" in names
    assert not any(name.startswith("pysync__mypyc.") for name in names), sorted(names)

    # The dependencies are this environment's (no index here): a venv that sees them,
    # and the wheel alone installed into it.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path, env)
    python = str(venv / "bin" / "python")
    run(
        [python, "-m", "pip", "install", "--no-deps", "--force-reinstall", str(wheels[0])],
        tmp_path,
        env,
    )
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    where = run(
        [python, "-c", "import pysync; print(pysync.__version__, pysync.__file__)"], app_dir, env
    ).split()
    assert where[0] == pysync.__version__
    installed = Path(where[1]).parent
    assert installed.is_relative_to(venv), installed  # the wheel's, not the checkout's
    assert (installed / "py.typed").is_file()
    which = "import pysync; print(pysync.implementation())"
    assert run([python, "-c", which], app_dir, env).strip() == "python"
    assert "serve" in run([str(venv / "bin" / "pysync"), "--help"], app_dir, env)

    # The README's app and its test file, under the installed plugin.
    for name, text in files_of(ROOT / "README.md").items():
        (app_dir / name).write_text(text)
    output = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], app_dir, env)
    assert " passed" in output and "failed" not in output, output
