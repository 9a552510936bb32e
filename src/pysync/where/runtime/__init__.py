"""Operator, cast and function implementations on Python values, by type family (as
pysync.postgres.types is split).

Every function here receives non-NULL arguments (strictness is handled by the compiler) and
raises WhereRuntimeError where Postgres raises an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Fn2 = Callable[[Any, Any], Any]
Fn1 = Callable[[Any], Any]
