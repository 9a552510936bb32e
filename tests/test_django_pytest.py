"""pysync.django.pytest under pytest-django: tests/djproject/pytest_tests.py run by pytest
in a project of its own (its own rootdir, conftest and DJANGO_SETTINGS_MODULE, so that
pytest-django configures Django there and not in this suite), on the plugin's private
Postgres."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pysync

TESTS = Path(__file__).resolve().parent


def test_pytest_django_gets_the_sandbox_and_the_real_engine(tmp_path: Path) -> None:
    assert importlib.util.find_spec("pytest_django"), "pip install -e '.[test]' (pytest-django)"
    shutil.copy(TESTS / "djproject" / "pytest_tests.py", tmp_path / "test_shapes.py")
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["pysync.django.pytest"]\n')
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nDJANGO_SETTINGS_MODULE = djproject.settings\nfilterwarnings = error\n"
        # pytest-asyncio warns (an error here) unless the loop scope is set.
        "asyncio_default_fixture_loop_scope = function\n"
    )
    source = Path(pysync.__file__).resolve().parent.parent
    path = [str(TESTS), str(source), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
        # The plugin points the server at its own Postgres: only the name is used.
        "DJANGO_TEST_DATABASE_URL": "postgresql://localhost/pytest_project",
        "DJANGO_TEST_SLOT": "pytest_project",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "test_shapes.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "4 passed" in output, output
    assert "django: version:" in output, output  # pytest-django configured Django
