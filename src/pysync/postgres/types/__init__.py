"""Postgres text-format values <-> Python values, for the types the WHERE language supports.

One module per family of types; import from the module that defines a name:
``numbers`` (int2/int4/int8, float4/float8, numeric), ``booleans``, ``strings`` (text,
varchar, enum, bpchar, uuid), ``datetimes`` (date, time, timestamp, timestamptz),
``intervals`` and ``arrays``. Representations are chosen so that comparisons are plain
Python comparisons where possible; each module's docstring gives its own.

Parsers raise ``ValueError`` on input they do not understand; that includes valid Postgres
input in formats pysync does not parse (e.g. ``'Jan 1 2024'`` for a date).
"""
