#!/usr/bin/env bash
# The compiled hot path (mypyc, pysync/_compiled.py) under the whole suite: what it
# compiles (decode, route, collect, the shape log) and everything that runs it end to
# end (replication, faults, --workers, the live path, the npm clients). A copy of the checkout is
# built (the editable install stays pure Python, the suite's reference run), and
# PYSYNC_IMPL=compiled makes a missing or stale build an ImportError, never a silent
# second run of the sources. Every `pysync serve` these tests start inherits both.
set -euo pipefail
cd "$(dirname "$0")/.."
tree="${TMPDIR:-/tmp}/pysync-compiled"
rm -rf "$tree"
mkdir -p "$tree"
tar -c --exclude=__pycache__ --exclude='*.so' --exclude=_compiled.json --exclude='*.egg-info' \
  setup.py pyproject.toml README.md build_backend src | tar -x -C "$tree"
if ! (cd "$tree" && PYSYNC_BUILD=compiled python3 setup.py build_ext --inplace >build.log 2>&1); then
  tail -40 "$tree/build.log" >&2
  exit 1
fi
export PYTHONPATH="$tree/src" PYSYNC_IMPL=compiled
python3 -c 'import pysync, pysync._compiled as c; print("pysync", c.describe(), "from", pysync.__file__)'
# The whole suite, as the pure-Python run after it (without coverage: compiled code is
# not traced). 1,960 tests in 15 minutes on this 2-core machine.
python3 -m pytest -q -p no:cacheprovider
