"""The code blocks of README.md, docs/*.md and the example's README, and the convention that says which run.

- Every block is fenced with a language: ```python, ```sh, ```ini, ```json, ```text
  (diagrams, output). An indented code block is refused: it would hide from this check.
- ```python and ```sh blocks run, unless the line before the fence is
  ``<!-- not run: reason -->`` (a reason is required).
- A block whose first line is ``# <file name>`` (``# app.py``, ``# test_app.py``,
  ``# pytest.ini``) is that file: every block of the same document runs in a directory
  holding all of that document's files. A ``test_*.py`` file runs under pytest there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "examples" / "todos" / "README.md",
    ROOT / "examples" / "django_todos" / "README.md",
]
LANGUAGES = {"python", "sh", "ini", "json", "text"}
RUNNABLE = {"python", "sh"}
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->")
FILE_NAME = re.compile(r"#\s*([\w.-]+\.(?:py|ini))\b")


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    not_run: str | None  # the reason, when marked

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"

    @property
    def file_name(self) -> str | None:
        first = self.text.split("\n", 1)[0]
        match = FILE_NAME.fullmatch(first.strip())
        return match.group(1) if match else None

    @property
    def runs(self) -> bool:
        return self.language in RUNNABLE and self.not_run is None


class DocumentError(ValueError):
    pass


def blocks_of(document: Path) -> list[Block]:
    """The fenced blocks of ``document``; raises DocumentError for a block without a
    language, of another language, unclosed, or indented."""
    lines = document.read_text().split("\n")
    blocks: list[Block] = []
    index = 0
    previous = ""  # the last non-blank line before the current one
    while index < len(lines):
        line = lines[index]
        where = f"{document.relative_to(ROOT)}:{index + 1}"
        if line.startswith("```"):
            language = line[3:].strip()
            if language not in LANGUAGES:
                raise DocumentError(
                    f"{where}: a fenced block needs one of the languages {sorted(LANGUAGES)}, "
                    f"not {language!r}"
                )
            end = index + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            if end == len(lines):
                raise DocumentError(f"{where}: the block is not closed")
            marker = NOT_RUN.fullmatch(previous.strip())
            if marker is not None and not marker.group(1):
                raise DocumentError(f"{where}: `not run:` needs a reason")
            text = "\n".join(lines[index + 1 : end]) + "\n"
            blocks.append(
                Block(document, index + 1, language, text, marker.group(1) if marker else None)
            )
            previous = lines[end]
            index = end + 1
            continue
        if line.startswith("    ") and line.strip() and index > 0 and not lines[index - 1].strip():
            raise DocumentError(f"{where}: an indented code block; fence it with a language")
        if line.strip():
            previous = line
        index += 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for document in DOCUMENTS for block in blocks_of(document)]


def files_of(document: Path) -> dict[str, str]:
    """The document's blocks that are files, by name."""
    files: dict[str, str] = {}
    for block in blocks_of(document):
        name = block.file_name
        if name is not None:
            if name in files:
                raise DocumentError(f"{block.name}: a second block named {name}")
            files[name] = block.text
    return files
