"""Every WHERE input is bounded: within the limits a clause works (no RecursionError, no
quadratic work), beyond them it is a WhereError naming the limit, never a hang or a 500.

Each check runs in a thread that starts as deep in the stack as a server's request
handler, and fails instead of hanging when it does not finish in a generous time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest

from pysync.postgres.catalog import Table, load_table
from pysync.postgres.types import numbers as pt
from pysync.where import WhereError, compile_where
from pysync.where import _limits as limits
from pysync.where._check import _PARSED

T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]

# Not a speed target: a bound against freezing (the machine is shared and may be slow).
_FREEZE_S = 60.0
# Frames a request handler already has on its stack (ASGI server, framework, engine).
_CALLER_FRAMES = 150


def bounded(fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) in a fresh thread below _CALLER_FRAMES frames; fails fast if it hangs."""
    outcome: dict[str, Any] = {}

    def nest(n: int) -> None:
        if n:
            nest(n - 1)
            return
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=nest, args=(_CALLER_FRAMES,), daemon=True)
    thread.start()
    thread.join(_FREEZE_S)
    if thread.is_alive():
        pytest.fail(
            f"{fn.__name__}{args!r:.80} did not finish in {_FREEZE_S} s: it would freeze the server"
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def rejected(clause: str, table: Table, params: dict[int, str] | None = None) -> str:
    with pytest.raises(WhereError) as info:
        bounded(compile_where, clause, table, params)
    return info.value.message


@pytest.fixture
def db(database_url: str) -> Iterator[tuple[Table, Conn]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE items (id int4 PRIMARY KEY, price numeric, title text, nums int4[], "
            "done bool)"
        )
        conn.execute(
            "INSERT INTO items SELECT i, i * 1.5, 't' || i, ARRAY[i], i % 2 = 0 "
            "FROM generate_series(1, 50) i"
        )
        t = load_table(conn, "public", "items")
        assert t is not None
        yield t, conn


def same_rows_as_postgres(
    clause: str, table: Table, conn: Conn, params: dict[int, str] | None = None
) -> list[int]:
    """Compile, then check evaluator, SQL and Postgres agree on every row; the ids matched."""
    where = bounded(compile_where, clause, table, params)
    sql, args = bounded(where.to_sql)
    expected = [r[0] for r in conn.execute(f"SELECT id FROM items WHERE {sql} ORDER BY id", args)]
    names = [c.name for c in table.columns]
    ev = where.bind(names)
    rows = conn.execute(
        "SELECT id::text, price::text, title, nums::text, CASE WHEN done THEN 't' ELSE 'f' END "
        "FROM items ORDER BY items.id"
    ).fetchall()
    matched = [int(r[0]) for r in rows if bounded(ev, list(r)) is True]
    assert matched == expected, clause[:200]
    normalized = where.normalized
    assert conn.execute(f"SELECT count(*) FROM items WHERE {normalized}").fetchone() == (
        len(expected),
    )
    return matched


# ---------------------------------------------------------------- numeric literals


@pytest.mark.parametrize(
    "literal",
    [
        "1e1000000000",
        "1e300000",
        "1e1000000",
        "-1e1000000000",
        "1e-1000000000",
        "1e131072",
        "1e-16384",
        "0e-20000",
        "1e99999999999999999999",
    ],
)
def test_numeric_literal_beyond_postgres_limits(db: tuple[Table, Conn], literal: str) -> None:
    t, conn = db
    with pytest.raises(psycopg.errors.NumericValueOutOfRange) as pg:
        conn.execute(f"SELECT {literal}::numeric")
    assert pg.value.diag.message_primary == "value overflows numeric format"
    for clause, params in [
        (f"price > {literal}", None),
        (f"price > '{literal}'::numeric", None),
        (f"price > '{literal}'", None),
        ("price > $1", {1: literal}),
    ]:
        message = rejected(clause, t, params)
        assert message.endswith(": value overflows numeric format"), (clause, message)


@pytest.mark.parametrize(
    "literal",
    [
        "1e131071",
        "1e-16383",
        "0.000e999999",
        "1" * 131072 + "e-1",
        "1" * 5000,
        "0." + "0" * 16382 + "1",
        "1.5e3",
        "-12.50",
        "1e3",
        "00012.3400",
    ],
)
def test_numeric_literal_within_postgres_limits(db: tuple[Table, Conn], literal: str) -> None:
    t, conn = db
    pg_text = conn.execute("SELECT %s::numeric::text", (literal,)).fetchone()
    assert pg_text is not None
    assert pt.format_numeric(bounded(pt.parse_numeric, literal)) == pg_text[0]
    same_rows_as_postgres(f"price < {literal}", t, conn)
    same_rows_as_postgres("price < $1", t, conn, {1: literal})


def test_long_integer_literals(db: tuple[Table, Conn]) -> None:
    t, conn = db
    digits = "9" * 5000
    same_rows_as_postgres(f"id < {digits}", t, conn)  # an integer too long for int(): numeric
    same_rows_as_postgres(f"nums[1] = 1 OR id < -{digits}", t, conn)
    assert "invalid syntax for type int4" in rejected("id = $1", t, {1: digits})
    assert "out of range" in str(pytest.raises(ValueError, pt.parse_int("int8"), digits).value)
    message = rejected(f"nums[{digits}] = 1", t)
    assert message.startswith("At location ")


# ---------------------------------------------------------------- sizes and nesting


def test_clause_length(db: tuple[Table, Conn]) -> None:
    t, _ = db
    huge = "id IN (" + ", ".join(str(i) for i in range(300_000)) + ")"  # ~2 MB
    assert len(huge) > limits.MAX_CLAUSE_LENGTH
    assert (
        rejected(huge, t)
        == f"WHERE clause length exceeds the limit of {limits.MAX_CLAUSE_LENGTH:,}"
    )
    many = "true OR " * (limits.MAX_TOKENS // 2) + "true"
    assert len(many) < limits.MAX_CLAUSE_LENGTH
    assert rejected(many, t) == f"number of tokens exceeds the limit of {limits.MAX_TOKENS:,}"


def test_largest_in_list_works(db: tuple[Table, Conn]) -> None:
    t, conn = db
    n = limits.MAX_LIST_ITEMS
    matched = same_rows_as_postgres(
        "id IN (" + ", ".join(str(i * 7) for i in range(n)) + ")", t, conn
    )
    assert matched == [i for i in range(1, 51) if i % 7 == 0]
    quoted = "title IN (" + ", ".join(f"'t{i}'" for i in range(0, 2 * n, 2)) + ")"
    assert same_rows_as_postgres(quoted, t, conn) == list(range(2, 51, 2))
    message = rejected("id IN (" + ", ".join("1" for _ in range(n + 1)) + ")", t)
    assert message == f"At location 0: number of list items exceeds the limit of {n:,}"
    message = rejected("nums = ARRAY[" + ", ".join("1" for _ in range(n + 1)) + "]", t)
    assert "number of list items exceeds the limit" in message


def test_parentheses(db: tuple[Table, Conn]) -> None:
    t, conn = db
    depth = limits.MAX_NESTING
    same_rows_as_postgres("(" * depth + "id = 3" + ")" * depth, t, conn)
    same_rows_as_postgres("lower(" * (depth - 1) + "title" + ")" * (depth - 1) + " = 't4'", t, conn)
    for n in (depth + 1, 50, 5000):
        message = rejected("(" * n + "id = 3" + ")" * n, t)
        assert message == (
            f"At location {depth}: nesting of brackets and prefix operators "
            f"exceeds the limit of {depth}"
        )


def test_not_chains(db: tuple[Table, Conn]) -> None:
    t, conn = db
    assert same_rows_as_postgres("NOT " * 10 + "id = 3", t, conn) == [3]
    others = [i for i in range(1, 51) if i != 3]
    assert same_rows_as_postgres("NOT " * (limits.MAX_NESTING - 1) + "(id = 3)", t, conn) == others
    for n in (limits.MAX_NESTING + 1, 5000):
        assert "nesting of brackets and prefix operators" in rejected("NOT " * n + "id = 3", t)
    assert "nesting" in rejected("- " * 5000 + "id = 3", t)
    assert "nesting" in rejected("CASE WHEN " * 1000 + "true" + " THEN true END" * 1000, t)


def test_and_or_chains(db: tuple[Table, Conn]) -> None:
    t, conn = db
    assert same_rows_as_postgres(" AND ".join(f"id <> {i}" for i in range(1000)), t, conn) == []
    terms = limits.MAX_TERMS
    ors = " OR ".join(f"id = {i}" for i in range(terms))
    assert same_rows_as_postgres(ors, t, conn) == list(range(1, 51))
    mixed = " OR ".join(f"(id = {i} AND done)" for i in range(2000))
    assert same_rows_as_postgres(mixed, t, conn) == list(range(2, 51, 2))
    message = rejected(ors + " OR id = 0", t)
    assert message == f"At location 0: number of OR terms exceeds the limit of {terms:,}"


def test_deep_expressions(db: tuple[Table, Conn]) -> None:
    t, conn = db
    n = limits.MAX_DEPTH - 2
    same_rows_as_postgres("id" + " + 1" * n + f" = {n + 5}", t, conn)
    for clause in (
        "id" + " + 1" * 1000 + " = 1",
        "title" + " || 'x'" * 2000 + " = 'x'",
        "id" + "::int4" * 1000 + " = 1",
    ):
        assert "expression depth exceeds the limit of 64" in rejected(clause, t)


def test_many_params(db: tuple[Table, Conn]) -> None:
    t, conn = db
    params = {i: str(i) for i in range(1, 1001)}
    clause = " OR ".join(f"id = ${i}" for i in params)
    assert same_rows_as_postgres(clause, t, conn, params) == list(range(1, 51))
    too_many = {i: "1" for i in range(1, limits.MAX_PARAMS + 2)}
    assert rejected("id = $1", t, too_many) == (
        f"number of parameters exceeds the limit of {limits.MAX_PARAMS:,}"
    )
    long_value = {1: "x" * (limits.MAX_PARAMS_LENGTH + 1)}
    assert "total length of parameter values" in rejected("title = $1", t, long_value)


def test_array_params_bounded_by_postgres_dimensions(db: tuple[Table, Conn]) -> None:
    t, conn = db
    same_rows_as_postgres("nums = $1", t, conn, {1: "{4}"})
    deep = "{" * 7 + "1" + "}" * 7
    with pytest.raises(psycopg.errors.ProgramLimitExceeded) as pg:
        conn.execute("SELECT %s::int4[]", (deep,))
    assert pg.value.diag.message_primary is not None
    assert "exceeds the maximum allowed (6)" in pg.value.diag.message_primary
    for value in (deep, "{" * 5000 + "}" * 5000):
        assert "invalid syntax for type int4[]" in rejected("nums = $1", t, {1: value})


def test_nul_is_rejected(db: tuple[Table, Conn]) -> None:
    t, conn = db
    with pytest.raises(psycopg.DataError):
        conn.execute("SELECT %s::text", ("a\x00b",))
    nul = 'invalid byte sequence for encoding "UTF8": 0x00'
    assert rejected("title = 'a\x00b'", t) == f"At location 10: {nul}"
    assert rejected("title = $1", t, {1: "a\x00b"}) == f"At location 8: {nul}"
    assert rejected("title = E'a\\000b'", t) == f"At location -1: {nul}"


def test_subset_where_is_bounded(db: tuple[Table, Conn]) -> None:
    from pysync.http.subset import SubsetError, parse_subset

    t, _ = db
    for where in ("price > 1e1000000000", "(" * 5000 + "true" + ")" * 5000, "NOT " * 5000 + "true"):
        with pytest.raises(SubsetError) as info:
            bounded(parse_subset, {"where": where}, t)
        assert info.value.errors["where"][0].startswith("At location ")
    with pytest.raises(SubsetError) as info:
        bounded(parse_subset, {"where": "price > $1", "params": {"1": "1e1000000000"}}, t)
    assert info.value.errors["where"] == ["At location 8: value overflows numeric format"]


def test_caches_keep_no_huge_clause(db: tuple[Table, Conn]) -> None:
    t, _ = db
    big = "id IN (" + ", ".join(str(i) for i in range(5000)) + ")"
    bounded(compile_where, big, t)
    assert _PARSED.get(big) is None
    small = "id = 12345"
    bounded(compile_where, small, t)
    assert _PARSED.get(small) is not None
    assert _PARSED.total_cost <= _PARSED.max_total_cost


def test_compile_where_from_many_threads(db: tuple[Table, Conn]) -> None:
    t, _ = db
    clauses = [f"id = {i} OR title = 't{i}'" for i in range(200)]
    results: list[object] = []
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(len(clauses)):
                where = compile_where(clauses[(i + offset) % len(clauses)], t)
                results.append(where.normalized)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(k * 37,))
        for k in range(min(8, (os.cpu_count() or 2) * 4))
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(_FREEZE_S)
    assert not errors
    assert len(results) == len(threads) * len(clauses)
    assert len(set(results)) == len(clauses)


def _nested(n: int, form: str) -> str:
    x = "id"
    for _ in range(n):
        x = form.format(x=x)
    return f"{x} = 1"


def test_repeated_subexpressions_are_counted_at_each_use(db: tuple[Table, Conn]) -> None:
    # x BETWEEN SYMMETRIC a AND b evaluates x four times, x IN (col, col) once per item:
    # nested, a short clause would make the evaluator and renderer work exponentially
    t, conn = db
    between = "(({x} BETWEEN SYMMETRIC 1 AND 40)::int4)"
    in_columns = "(({x} IN (id, id, id))::int4)"
    same_rows_as_postgres(_nested(4, between), t, conn)
    same_rows_as_postgres(_nested(4, in_columns), t, conn)
    for clause in (_nested(14, between), _nested(14, in_columns)):
        assert len(clause) < 1000
        assert rejected(clause, t) == (
            f"size of the expression exceeds the limit of {limits.MAX_NODES:,}"
        )


def test_like_is_linear_and_exact(db: tuple[Table, Conn]) -> None:
    t, conn = db
    long_title = "a" * 20_000
    conn.execute("UPDATE items SET title = %s WHERE id = 7", (long_title,))
    conn.execute("UPDATE items SET title = 'abcabc_%x' WHERE id = 8")
    # a regular expression with one .* per % backtracks for ages on the long title
    for pattern in [
        "%a" * 40 + "%b",
        "%%%%%%%%%%%%%%%%%%%%%%%%b",
        "%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a",
    ]:
        same_rows_as_postgres(f"title LIKE '{pattern}'", t, conn)
        same_rows_as_postgres(f"title ILIKE '{pattern.upper()}'", t, conn)
    for pattern in [
        "abc%",
        "%abc",
        "%bca%",
        "a_c%c\\_\\%_",
        "%c_%x",
        "_b%",
        "%",
        "",
        "abcabc\\_\\%x",
        "a%a%",
        "%abc%abc%",
        "abcabc%%x",
        "%_",
        "_%_%_%_%_%_%_%_%_%_",
    ]:
        same_rows_as_postgres(f"title LIKE '{pattern}'", t, conn)
        same_rows_as_postgres("title LIKE $1", t, conn, {1: pattern})


@pytest.mark.parametrize("column", ["price", "id", "done", "nums"])
def test_long_invalid_values_are_rejected_in_linear_time(
    db: tuple[Table, Conn], column: str
) -> None:
    # "\d+\.?\d*" backtracked quadratically: 20,000 digits and an "x" took 14 s
    t, _ = db
    for value in (
        "1" * 200_000 + "x",
        " " * 200_000 + "x",
        "1" * 200_000 + ".",
        "{" + "1" * 200_000 + "x}",
    ):
        message = rejected(f"{column} = $1", t, {1: value})
        assert any(w in message for w in ("invalid syntax for type", "out of range", "overflows"))


def test_long_literals_within_the_length_limit(db: tuple[Table, Conn]) -> None:
    t, conn = db
    text = "é" * (limits.MAX_CLAUSE_LENGTH - 20)
    assert same_rows_as_postgres(f"title = '{text}'", t, conn) == []
    assert same_rows_as_postgres("title = $1", t, conn, {1: text}) == []


# Openers and the text that closes each, nested up to MAX_NESTING: whatever the checker
# thinks of the result, it answers (a WhereError or a Where), never a RecursionError.
_NESTABLE = [
    ("(", ")"),
    ("lower(", ")"),
    ("coalesce(", ")"),
    ("greatest(1, ", ")"),
    ("CAST(", " AS int4)"),
    ("CASE WHEN ", " THEN true END"),
    ("NOT ", ""),
    ("- ", ""),
    ("NOT (", ")"),
    ("id IN (", ")"),
    ("id = ANY(", ")"),
    ("EXISTS (SELECT ", ")"),
    ("(SELECT ", ")"),
    ("(CASE WHEN true THEN ", " END)"),
    ("lower(NOT ", ")"),
    ("concat(", ", 'x')"),
]


@pytest.mark.parametrize(("opener", "closer"), _NESTABLE)
def test_nesting_at_the_limit_never_overflows_the_stack(
    db: tuple[Table, Conn], opener: str, closer: str
) -> None:
    t, _ = db
    two = ("NOT (", "lower(NOT ", "EXISTS (SELECT ", "(SELECT ", "(CASE", "id = ANY(")
    per_level = 2 if opener.startswith(two) else 1
    levels = limits.MAX_NESTING // per_level
    for inner in ("id", "true", "1"):
        clause = opener * levels + inner + closer * levels
        try:
            bounded(compile_where, clause, t)
        except WhereError as exc:
            assert "nesting" not in exc.message, clause
        clause = opener * (levels + 1) + inner + closer * (levels + 1)
        with pytest.raises(WhereError):
            bounded(compile_where, clause, t)


def test_token_soup_is_a_where_error_or_a_where(db: tuple[Table, Conn]) -> None:
    import random

    t, _ = db
    words = [
        "id",
        "price",
        "title",
        "nums",
        "done",
        "1",
        "-1",
        "1.5",
        "1e5",
        "'a'",
        "'{1,2}'",
        "$1",
        "(",
        ")",
        "[",
        "]",
        ",",
        "=",
        "<>",
        "<",
        "+",
        "-",
        "*",
        "/",
        "%",
        "^",
        "||",
        "&",
        "~",
        "|/",
        "::int4",
        "::text",
        "::numeric",
        "::int4[]",
        "::interval",
        "AND",
        "OR",
        "NOT",
        "IS",
        "NULL",
        "TRUE",
        "IN",
        "BETWEEN",
        "SYMMETRIC",
        "LIKE",
        "ILIKE",
        "ESCAPE",
        "ANY",
        "ALL",
        "ARRAY",
        "CASE",
        "WHEN",
        "THEN",
        "END",
        "DISTINCT",
        "FROM",
        "lower",
        "coalesce",
        "greatest",
        "concat",
        "array_cat",
        "int4",
        "CAST",
        "AS",
        "INTERVAL",
        "'1 day'",
        "E'\\\\n'",
        "$$x$$",
        "count",
        "sum",
        "OVER",
        "ORDER",
        "BY",
        ";",
    ]
    rng = random.Random(9)
    names = [c.name for c in t.columns]

    def soup() -> int:
        compiled = 0
        for _ in range(3000):
            clause = " ".join(rng.choice(words) for _ in range(rng.randint(1, 10)))
            try:
                where = compile_where(clause, t, {1: rng.choice(["5", "x", "{1}", "1e400", ""])})
            except WhereError:
                continue
            where.to_sql()
            where.bind(names)
            compiled += 1
        return compiled

    assert bounded(soup) > 0


def test_type_named_calls_and_array_constructors(db: tuple[Table, Conn]) -> None:
    # sqlglot parses each of these twice (as a type, then as an expression): nested, the
    # work doubles a level, and more around a big argument
    t, conn = db
    limit = limits.MAX_TYPE_CALL_NESTING
    assert same_rows_as_postgres("int4(text('3')) = id", t, conn) == [3]
    assert same_rows_as_postgres("nums = ARRAY[int4('4')]", t, conn) == [4]
    assert "nested ARRAY constructors" in rejected("nums = ARRAY[ARRAY[1]]", t)
    big = ", ".join("1" for _ in range(limits.MAX_LIST_ITEMS - 1))
    bounded(compile_where, f"int4((ARRAY[{big}])[1]::text) = 1", t)
    for clause in (
        "int4(text(int4('1'))) = 1",
        "nums = ARRAY[int4((ARRAY[1])[1])]",
        "int4((ARRAY[" * 3 + big + "])[1])" * 3 + " = 1",
        "ARRAY[" * 20 + "1" + "]" * 20 + " IS NULL",
    ):
        assert rejected(clause, t).endswith(
            f"nesting of ARRAY constructors and type-named calls exceeds the limit of {limit}"
        )
