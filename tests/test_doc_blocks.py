"""Every code block of README.md, docs/*.md and examples/todos/README.md marked runnable
runs as written (doc_blocks.py has the convention): a script with ``DATABASE_URL`` on a
new database and ``PYSYNC_URL`` on a ``pysync serve`` of it, a test file under pytest in
a directory of its own, beside the document's other files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from doc_blocks import ROOT, Block, DocumentError, all_blocks, blocks_of, files_of
from pysync.postgres.cluster import free_port
from serve_process import ServeProcess

BLOCKS = all_blocks()
RUNNABLE = [block for block in BLOCKS if block.runs]


def clean_env(**extra: str) -> dict[str, str]:
    """This process' environment without pysync's or Electric's settings: a snippet sees
    only what a user's shell would set for it."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYSYNC_", "ELECTRIC_", "PYTEST_")) and name != "DATABASE_URL"
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def lay_out(block: Block, directory: Path) -> None:
    for name, text in files_of(block.document).items():
        (directory / name).write_text(text)


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 180) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{args} exited with {done.returncode}:\n{output[-6000:]}"
    return output


def test_every_block_is_fenced_with_a_language_and_runnable_blocks_exist() -> None:
    # The documents parse (no bare or indented block), and the snippets a new user copies
    # first are among those run.
    names = {block.file_name for block in RUNNABLE}
    assert {"app.py", "test_app.py"} <= names
    sections = [b.document.name for b in RUNNABLE]
    assert sections.count("README.md") >= 4 and "first-hour.md" in sections


def test_a_block_the_convention_cannot_place_is_refused(tmp_path: Path) -> None:
    for text, problem in (
        ("```\nx\n```\n", "needs one of the languages"),
        ("```python\nx\n", "not closed"),
        ("<!-- not run: -->\n```sh\nx\n```\n", "needs a reason"),
        ("text\n\n    pip install x\n", "indented code block"),
    ):
        document = ROOT / "docs" / f".{tmp_path.name}.md"  # blocks_of names it from ROOT
        document.write_text(text)
        try:
            with pytest.raises(DocumentError, match=problem):
                blocks_of(document)
        finally:
            document.unlink()


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.name for block in RUNNABLE])
def test_the_block_runs(block: Block, database_url: str, tmp_path: Path) -> None:
    lay_out(block, tmp_path)
    name = block.file_name
    if name is not None and name.startswith("test_"):
        # An app's test file: pytest in the directory, with the document's pytest.ini
        # when it has one, the plugin's Postgres and nothing else of ours.
        output = run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name],
            tmp_path,
            clean_env(),
        )
        assert " passed" in output and "failed" not in output, output
        if (tmp_path / "pytest.ini").exists():
            assert "PytestDeprecationWarning" not in output, output
        return
    script = tmp_path / (name or ("snippet.py" if block.language == "python" else "snippet.sh"))
    script.write_text(block.text)
    port = free_port()
    server = ServeProcess.on(database_url, port, tmp_path / "storage")
    try:
        command = (
            [sys.executable, script.name]
            if block.language == "python"
            else ["bash", "-euo", "pipefail", script.name]
        )
        run(
            command,
            tmp_path,
            clean_env(DATABASE_URL=database_url, PYSYNC_URL=f"http://127.0.0.1:{port}"),
        )
    finally:
        server.stop()
