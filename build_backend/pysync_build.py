"""pysync's build backend: setuptools', plus the requirements of the compiled hot path when
it is asked for (``PYSYNC_BUILD=compiled``).

mypyc (``setup.py``) needs mypy and the packages whose types the hot modules' imports reach
(pip builds in an environment of its own, where mypy would see them as ``Any`` and refuse
the classes built on them under ``--strict``). A pure-Python build needs none of that, so
the default install does not download it.
"""

from __future__ import annotations

import os

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 - the backend's hooks, unchanged

COMPILED_REQUIRES = [
    "mypy==2.4.1",  # the test extra's pin: CI compiles with the mypy that checks the code
    "msgspec>=0.19",
    "psycopg>=3.3",
    "psycopg-pool>=3.2",
    "prometheus-client>=0.20",
    "sqlglot>=30",
    "pglast>=7",
    "starlette>=0.40",
    "httpx>=0.27",
]


def _compiled() -> list[str]:
    return COMPILED_REQUIRES if os.environ.get("PYSYNC_BUILD") == "compiled" else []


def get_requires_for_build_wheel(config_settings: dict[str, object] | None = None) -> list[str]:
    return _setuptools.get_requires_for_build_wheel(config_settings) + _compiled()  # type: ignore[arg-type]


def get_requires_for_build_editable(
    config_settings: dict[str, object] | None = None,
) -> list[str]:
    return _setuptools.get_requires_for_build_editable(config_settings) + _compiled()  # type: ignore[arg-type]
