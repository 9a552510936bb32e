"""The import contracts of pyproject.toml ([tool.importlinter]): no module imports from a
layer above its own (docs/architecture.md draws them)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_module_imports_from_a_layer_above() -> None:
    # A subprocess: import-linter puts its working directory on sys.path and prints its
    # report, which is the failure's explanation.
    done = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"]
        + ["--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_architecture_picture_lists_the_contract_layers() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (layers,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["name"] == "layers"]
    contract = [layer.replace("pysync.", "") for layer in layers["layers"]]
    document = (ROOT / "docs" / "architecture.md").read_text()
    picture = document.split("```text\n", 1)[1].split("```", 1)[0]
    # A layer's line starts at the left margin; its description follows two spaces on,
    # or on the next line (indented).
    drawn = [line.split("  ")[0] for line in picture.splitlines() if not line.startswith(" ")]
    assert drawn == contract
