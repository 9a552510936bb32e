#!/usr/bin/env bash
# The compiled hot path (mypyc, pysync/_compiled.py) under the tests of what it compiles
# (decode, route, collect, the shape log) and of what runs it end to end: replication,
# faults, --workers, the live path, the published npm clients. A copy of the checkout is
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
python3 -m pytest -q -p no:cacheprovider \
  tests/test_pgoutput.py tests/test_router.py tests/test_log.py tests/test_log_index.py \
  tests/test_offset.py tests/test_storage.py tests/test_compaction.py tests/test_changes.py \
  tests/test_engine.py tests/test_engine_consistency.py tests/test_key_changes.py \
  tests/test_poison_changes.py tests/test_subquery_engine.py tests/test_subquery_model.py \
  tests/test_partitions_model.py tests/test_sync.py tests/test_replication.py \
  tests/test_faults.py tests/test_workers.py tests/test_live_path.py tests/test_e2e.py
