#!/usr/bin/env bash
# pysync.django on Django 6 (which needs Python 3.12 or later): the Django tests, the
# Django docs' blocks and the Django example, in a virtual environment of their own. The
# main run (.ci/run) covers Django 5.2 LTS on the machine's Python.
set -euo pipefail
cd "$(dirname "$0")/.."
python=""
for candidate in python3.13 python3.12 /root/.pyenv/versions/3.1[23]*/bin/python3; do
  if command -v "$candidate" >/dev/null 2>&1 \
    && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "tests/django-6.sh: Django 6 needs Python 3.12 or later; none found on PATH" >&2
  exit 1
fi
venv="${TMPDIR:-/tmp}/pysync-django6"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check '.[test]' 'django>=6,<7'
"$venv/bin/python" -c 'import django, sys; print("Django", django.__version__, "on Python", sys.version.split()[0])'
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_django_*.py \
  tests/test_doc_blocks.py -k 'django'
(cd examples/django_todos && "$venv/bin/python" manage.py test)
