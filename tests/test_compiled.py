"""The mypyc-compiled hot modules and the pure-Python ones (pysync/_compiled.py) agree.

The agreement test replays one replication stream (a few hundred random changes over many
column types, NULLs, unicode, arrays, numerics, TOASTed values, key changes, rows moving in
and out of shapes) through an engine of each implementation, in two processes, and compares
every shape's log byte for byte. The compiled modules are built here, from this checkout
into a copy (``setup.py build_ext --inplace`` with ``PYSYNC_BUILD=compiled``, mypyc and a C
compiler), whatever the installed pysync is: the compiled hot path is opt-in, and the suite
runs on the pure-Python modules.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from psycopg.types.json import Json, Jsonb

from engine_runner import Conn, drop_slot, fence
from pysync import _compiled
from pysync.postgres.cluster import free_port
from serve_process import ServeProcess

TESTS = Path(__file__).parent
ROOT = TESTS.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of this checkout's package with its hot modules compiled: its ``src``."""
    tree = tmp_path_factory.mktemp("compiled")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    skipped = shutil.ignore_patterns("__pycache__", "*.so", "_compiled.json", "*.egg-info")
    shutil.copytree(ROOT / "build_backend", tree / "build_backend", ignore=skipped)
    shutil.copytree(ROOT / "src", tree / "src", ignore=skipped)
    done = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tree,
        env={**os.environ, "PYSYNC_BUILD": "compiled"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "pure-Python modules only" not in output, output[-6000:]
    yield tree / "src"


SETUP = """
CREATE TYPE mood AS ENUM ('ok', 'a b', 'ünï', 'quo"te');
CREATE TABLE items (
    id int PRIMARY KEY, grp int, n2 int2, n8 int8, num numeric, f4 float4, f8 float8,
    t text, vc varchar(20), ch char(3), b bool, d date, ts timestamp, tstz timestamptz,
    iv interval, u uuid, j json, jb jsonb, by bytea, ia int[], ta text[], na numeric[],
    m mood, big text
);
-- Out of line, uncompressed: an update that leaves it alone sends it as unchanged TOAST.
ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE tags (k text, v text);
"""

SHAPES: list[dict[str, Any]] = [
    {"table": "items"},
    {"table": "items", "replica": "full"},
    {"table": "items", "where": "grp = 3"},
    {"table": "items", "where": "grp = $1", "params": ["4"]},
    {"table": "items", "where": "grp IN (1, 2)", "columns": ["id", "t", "ia", "big"]},
    {"table": "items", "where": "n8 > 0 AND b"},
    {"table": "items", "where": "t LIKE 'a%' OR vc ILIKE '%Ü%'"},
    {"table": "items", "where": "num >= 10.5 AND num < 1e6"},
    {"table": "items", "where": "f8 IS NULL OR f8 < 0"},
    {"table": "items", "where": "m::text = 'ünï'", "replica": "full"},
    {"table": "items", "where": "d > '2020-01-01' AND 7 = ANY(ia)"},
    {"table": "tags"},
    {"table": "tags", "where": "k = 'a'"},
]

TEXTS = ["", "a", "abc", "ünïcödé ✓", 'quo"te', "back\\slash", "new\nline", "tab\t", "日本語", "😀"]


def _maybe(rng: random.Random, value: Any) -> Any:
    return None if rng.random() < 0.15 else value


def _float(rng: random.Random) -> float:
    return rng.choice(
        [float("nan"), float("inf"), -float("inf"), -0.0, 0.1, rng.uniform(-1e9, 1e9)]
    )


def _row(rng: random.Random, key: int) -> dict[str, Any]:
    """Random values of every column but the key (None is NULL)."""
    return {
        "id": key,
        "grp": _maybe(rng, rng.randint(0, 5)),
        "n2": _maybe(rng, rng.randint(-32768, 32767)),
        "n8": _maybe(rng, rng.choice([-(2**63), 2**63 - 1, rng.randint(-100, 100)])),
        "num": _maybe(
            rng,
            rng.choice(
                [
                    Decimal("NaN"),
                    Decimal("10.5"),
                    Decimal("-0.000001"),
                    Decimal(rng.randint(0, 10**7)) / 7,
                ]
            ),
        ),
        "f4": _maybe(rng, _float(rng)),
        "f8": _maybe(rng, _float(rng)),
        "t": _maybe(rng, rng.choice(TEXTS) + rng.choice(TEXTS)),
        "vc": _maybe(rng, rng.choice(["ÜBER", "über", "x", ""])),
        "ch": _maybe(rng, rng.choice(["a", "ab", "abc"])),
        "b": _maybe(rng, rng.random() < 0.5),
        "d": _maybe(rng, rng.choice(["2019-12-31", "2024-02-29", "infinity", "0044-03-15 BC"])),
        "ts": _maybe(rng, rng.choice(["2024-02-29 12:34:56.789", "-infinity", "1999-01-01"])),
        "tstz": _maybe(rng, rng.choice(["2024-02-29 12:34:56.789+05:30", "infinity"])),
        "iv": _maybe(rng, rng.choice(["1 year 2 mons -3 days 04:05:06.7", "-00:00:01", "0"])),
        "u": _maybe(rng, f"{rng.getrandbits(128):032x}"),
        "j": _maybe(rng, Json({"a": [1, None, "ü"], "b": rng.random()})),
        "jb": _maybe(rng, Jsonb({"k": rng.choice(TEXTS), "n": rng.randint(0, 9)})),
        "by": _maybe(rng, rng.randbytes(rng.randint(0, 20))),
        "ia": _maybe(rng, [rng.choice([1, 7, None, -3]) for _ in range(rng.randint(0, 4))]),
        "ta": _maybe(rng, [rng.choice([*TEXTS, None, "NULL", "{}", ","]) for _ in range(3)]),
        "na": _maybe(rng, [Decimal("1.50"), None, Decimal(rng.randint(-9, 9))]),
        "m": _maybe(rng, rng.choice(["ok", "a b", "ünï", 'quo"te'])),
        # Incompressible and over the TOAST threshold: stored out of line.
        "big": _maybe(rng, rng.randbytes(3000).hex() if rng.random() < 0.5 else "short"),
    }


CASTS = {
    "d": "date",
    "ts": "timestamp",
    "tstz": "timestamptz",
    "iv": "interval",
    "u": "uuid",
    "m": "mood",
}


def _value(column: str) -> str:
    return f"%({column})s::{CASTS[column]}" if column in CASTS else f"%({column})s"


def write_changes(conn: Conn, seed: int, transactions: int) -> int:
    """Random inserts, updates (some of a few columns only, some of the key) and deletes;
    returns how many row changes were written."""
    rng = random.Random(seed)
    keys: set[int] = set()
    next_key = 1
    written = 0
    for _ in range(transactions):
        with conn.transaction():
            for _ in range(rng.randint(1, 15)):
                roll = rng.random()
                if roll < 0.45 or not keys:
                    row = _row(rng, next_key)
                    keys.add(next_key)
                    next_key += 1
                    columns = ", ".join(row)
                    values = ", ".join(_value(c) for c in row)
                    conn.execute(f"INSERT INTO items ({columns}) VALUES ({values})", row)
                elif roll < 0.85:
                    key = rng.choice(sorted(keys))
                    row = _row(rng, key)
                    if rng.random() < 0.1:
                        row["id"] = next_key  # the key changes
                        keys.discard(key)
                        keys.add(next_key)
                        next_key += 1
                    changed = rng.sample([c for c in row if c != "id"], rng.randint(1, 4))
                    if row["id"] != key:
                        changed.append("id")
                    sets = ", ".join(f"{c} = {_value(c)}" for c in changed)
                    conn.execute(
                        f"UPDATE items SET {sets} WHERE id = %(old)s",
                        {**{c: row[c] for c in changed}, "old": key},
                    )
                else:
                    key = rng.choice(sorted(keys))
                    keys.discard(key)
                    conn.execute("DELETE FROM items WHERE id = %s", (key,))
                written += 1
                if rng.random() < 0.2:
                    k, v = rng.choice(["a", "b", "ü"]), _maybe(rng, rng.choice(TEXTS))
                    if rng.random() < 0.7:
                        conn.execute("INSERT INTO tags VALUES (%s, %s)", (k, v))
                    else:
                        conn.execute("DELETE FROM tags WHERE k = %s", (k,))
                    written += 1
    return written


def start_runner(url: str, impl: str, out: Path, src: Path) -> subprocess.Popen[str]:
    out.mkdir()
    env = {**os.environ, _compiled.ENV: impl, "PYTHONPATH": os.pathsep.join([str(src), str(TESTS)])}
    return subprocess.Popen(
        [
            sys.executable,
            str(TESTS / "impl_runner.py"),
            url,
            f"impl_{impl}",
            f"impl_{impl}",
            json.dumps(SHAPES),
            str(out),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def expect_line(proc: subprocess.Popen[str], word: str) -> list[str]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(word):
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"expected {word!r}, got {line!r}; stderr:\n{err[-4000:]}")
    return line.split()


def test_compiled_and_python_write_the_same_shape_logs(
    conn: Conn, database_url: str, tmp_path: Path, built: Path
) -> None:
    conn.execute(SETUP)
    conn.execute("INSERT INTO tags VALUES ('a', 'before'), ('b', NULL)")
    runners = {
        impl: start_runner(database_url, impl, tmp_path / impl, built)
        for impl in ("compiled", "python")
    }
    try:
        for impl, proc in runners.items():
            _, ran, module_file = expect_line(proc, "ready")
            assert ran == impl
            assert module_file.endswith(".py") == (impl == "python"), module_file
        written = write_changes(conn, seed=24, transactions=40)
        assert written >= 300
        target = fence(conn)
        for proc in runners.values():
            assert proc.stdin is not None
            proc.stdin.write(f"{target}\n")
            proc.stdin.flush()
        for proc in runners.values():
            expect_line(proc, "done")
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    finally:
        for proc in runners.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)  # and closes its pipes
        for impl in runners:
            drop_slot(conn, f"impl_{impl}")
    entries = 0
    for n, spec in enumerate(SHAPES):
        compiled = (tmp_path / "compiled" / f"{n}.log").read_bytes()
        python = (tmp_path / "python" / f"{n}.log").read_bytes()
        assert compiled == python, f"shape {n} {spec}: the logs differ"
        entries += compiled.count(b"\n")
    # Every shape took changes, and the stream reached them all.
    assert all((tmp_path / "python" / f"{n}.log").stat().st_size > 0 for n in range(len(SHAPES)))
    assert entries > written


def run_python(code: str, env: dict[str, str], path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(path), **env},
        timeout=120,
    )


WHICH = "import pysync, pysync.shapes.router as r; print(pysync.implementation(), r.__file__)"


def test_pysync_impl_chooses_before_the_hot_modules_import(built: Path) -> None:
    python = run_python(WHICH, {_compiled.ENV: "python"}, built)
    assert python.returncode == 0, python.stderr
    ran, module_file = python.stdout.split()
    assert (ran, Path(module_file).suffix) == ("python", ".py")
    compiled = run_python(WHICH, {_compiled.ENV: "compiled"}, built)
    assert compiled.returncode == 0, compiled.stderr  # fails where nothing was compiled
    ran, module_file = compiled.stdout.split()
    assert (ran, Path(module_file).suffix) == ("compiled", ".so")
    wrong = run_python(WHICH, {_compiled.ENV: "fast"}, built)
    assert wrong.returncode != 0
    assert "PYSYNC_IMPL must be 'python' or 'compiled' (or unset), not 'fast'" in wrong.stderr


def test_an_edited_source_is_run_instead_of_its_stale_compiled_module(
    tmp_path: Path, built: Path
) -> None:
    """An editable install: the .so beside an edited .py is not silently used."""
    package = built / "pysync"
    copy = tmp_path / "src"
    (copy / "pysync").mkdir(parents=True)
    subprocess.run(["cp", "-a", f"{package}/.", str(copy / "pysync")], check=True)
    for shared in package.parent.glob("pysync__mypyc.*"):  # the modules' compiled code
        subprocess.run(["cp", "-a", str(shared), str(copy)], check=True)
    fresh = run_python(WHICH, {_compiled.ENV: ""}, copy)
    assert fresh.stdout.split()[0] == "compiled", fresh.stderr
    router = copy / "pysync" / "shapes" / "router.py"
    router.write_text(router.read_text() + "\nEDITED = True\n")
    stale = run_python(WHICH + "; print(r.EDITED)", {_compiled.ENV: ""}, copy)
    assert stale.returncode == 0, stale.stderr
    ran, module_file, edited = stale.stdout.split()
    assert (ran, module_file, edited) == ("python", str(router), "True")
    assert (
        "pysync runs its pure-Python modules: stale compiled modules: pysync/shapes/router.py "
        "changed since they were built (PYSYNC_BUILD=compiled pip install -e . rebuilds them)"
    ) in stale.stderr
    demanded = run_python(WHICH, {_compiled.ENV: "compiled"}, copy)
    assert demanded.returncode != 0
    assert "ImportError: PYSYNC_IMPL=compiled but stale compiled modules" in demanded.stderr


def test_pysync_serve_logs_which_hot_modules_run(
    database_url: str, tmp_path: Path, built: Path
) -> None:
    for impl, line in (
        ("compiled", f"hot modules: compiled (mypyc, {len(_compiled.COMPILED_MODULES)} modules)"),
        ("python", "hot modules: python (PYSYNC_IMPL=python)"),
    ):
        server = ServeProcess.on(
            database_url,
            free_port(),
            tmp_path / impl,
            "--log-level",
            "info",
            "--slot",
            f"serve_{impl}",
            env={_compiled.ENV: impl, "PYTHONPATH": str(built)},
        )
        try:
            assert any(entry.endswith(f"INFO pysync: {line}") for entry in server.lines), (
                server.output()
            )
        finally:
            assert server.stop(), server.output()
