"""A WHERE clause answered by pysync and by Postgres on the rows of a table ``t`` (its
``id`` the key): the evaluator on the rows' text, as pgoutput sends it, and the snapshot
SQL pysync writes for it, each against Postgres' own answer row by row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from pysync.postgres.catalog import Table
from pysync.where import WhereRuntimeError, compile_where

Conn = psycopg.Connection[tuple[Any, ...]]


def postgres_answers(conn: Conn, clause: str, params: Sequence[object]) -> list[object]:
    """(clause) on every row of ``t`` in id order; "error" for a row Postgres raises on."""
    try:
        sql = f"SELECT ({clause})::bool FROM t ORDER BY id"
        return [r[0] for r in conn.execute(sql, params).fetchall()]
    except psycopg.Error:
        pass
    out: list[object] = []
    for (i,) in conn.execute("SELECT id FROM t ORDER BY id").fetchall():
        try:
            one = conn.execute(f"SELECT ({clause})::bool FROM t WHERE id = {i}", params)
            out.append(one.fetchall()[0][0])
        except psycopg.Error:
            out.append("error")
    return out


def assert_same_answers(
    conn: Conn,
    table: Table,
    texts: list[list[str | None]],
    clause: str,
    params: Mapping[int, str],
) -> None:
    """pysync's evaluator on ``texts`` (the rows of ``t`` in id order) and its snapshot
    SQL answer ``clause`` as Postgres does, and the rows tell its answers apart."""
    where = compile_where(clause, table, params)
    evaluate = where.bind([c.name for c in table.columns])
    ours: list[object] = []
    for row in texts:
        try:
            ours.append(evaluate(row))
        except WhereRuntimeError:
            ours.append("error")
    values = [params[1]] if "$1" in clause else []
    expected = postgres_answers(conn, clause.replace("$1", "%s"), values)
    assert ours == expected
    assert len(set(ours)) > 1, "the rows do not tell this clause's answers apart"
    sql, sql_params = where.to_sql()
    assert postgres_answers(conn, sql, sql_params) == expected, sql
