"""Router: equality-indexed and scanned shapes, candidates for old and new rows."""

from __future__ import annotations

from pysync.postgres.catalog import Column, Table
from pysync.shapes.router import Router
from pysync.where import compile_where


def column(name: str, attnum: int, type_oid: int, type_name: str, category: str) -> Column:
    return Column(
        name=name,
        attnum=attnum,
        type_oid=type_oid,
        type_name=type_name,
        type_mod=-1,
        dims=0,
        not_null=False,
        type_kind="b",
        type_category=category,
    )


TABLE = Table(
    oid=1,
    schema="public",
    name="t",
    columns=(
        column("id", 1, 23, "int4", "N"),
        column("grp", 2, 23, "int4", "N"),
        column("title", 3, 25, "text", "S"),
    ),
    primary_key=("id",),
    replica_identity="f",
)
LAYOUT = ("id", "grp", "title")


def index(clause: str) -> object:
    return compile_where(clause, TABLE).equality_index()


def test_candidates_by_equality_and_scan() -> None:
    router: Router[str] = Router()
    rel = ("public", "t")
    router.add(rel, "grp2", index("grp = 2"))  # type: ignore[arg-type]
    router.add(rel, "grp13", index("grp IN (1, 3)"))  # type: ignore[arg-type]
    router.add(rel, "and", index("grp = 3 AND title LIKE 'a%'"))  # type: ignore[arg-type]
    router.add(rel, "all", None)
    router.add(rel, "like", index("title LIKE 'a%'"))  # type: ignore[arg-type]
    routes = router.tables[rel]
    assert routes.candidates(LAYOUT, ("1", "2", "x"), None) == {"grp2", "all", "like"}
    # An update moving a row from group 2 to 3 reaches both groups' shapes.
    assert routes.candidates(LAYOUT, ("1", "3", "x"), ("1", "2", "x")) == {
        "grp2",
        "grp13",
        "and",
        "all",
        "like",
    }
    assert routes.candidates(LAYOUT, ("1", None, "x"), None) == {"all", "like"}
    assert routes.candidates(LAYOUT, ("1", "02", "x"), None) >= {"grp2"}  # int4 text "02" = 2
    # Another relation layout (a column order pgoutput may send after DDL) is honoured.
    assert routes.candidates(("grp", "id", "title"), ("1", "2", "x"), None) >= {"grp13"}
    router.remove(rel, "grp2")
    router.remove(rel, "grp13")
    router.remove(rel, "and")
    assert routes.candidates(LAYOUT, ("1", "2", "x"), None) == {"all", "like"}
    router.remove(rel, "all")
    router.remove(rel, "like")
    assert rel not in router.tables


# -- range routing ----------------------------------------------------------------------

from decimal import Decimal  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pysync.shapes.router import TableRoutes  # noqa: E402
from pysync.where import RangeIndex  # noqa: E402

NUMBER = st.one_of(st.integers(-50, 50), st.decimals(-50, 50, places=1, allow_nan=False))
BOUND = st.one_of(st.none(), NUMBER)


@st.composite
def ranges(draw: st.DrawFn) -> RangeIndex:
    low, high = draw(BOUND), draw(BOUND)
    if low is None and high is None:
        low = draw(NUMBER)
    return RangeIndex(
        "grp", low, draw(st.booleans()), high, draw(st.booleans()), lambda s: Decimal(s)
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), ranges()), max_size=60),
    st.lists(NUMBER, min_size=1, max_size=10),
)
def test_range_candidates_are_exactly_the_containing_ranges(
    ops: list[tuple[bool, RangeIndex]], values: list[object]
) -> None:
    """Adds (and some removals) in any order; every lookup finds exactly the ranges that
    contain the value, whatever the tree's state of rebuilding."""
    routes: TableRoutes[int] = TableRoutes()
    live: dict[int, RangeIndex] = {}
    for n, (remove, r) in enumerate(ops):
        if remove and live:
            gone = next(iter(live))
            routes.remove(gone)
            del live[gone]
        routes.add(n, r)
        live[n] = r
        value = values[n % len(values)]
        found = routes.candidates(LAYOUT, ("1", str(value), "x"), None)
        assert found == {s for s, rr in live.items() if rr.contains(Decimal(str(value)))}


def test_range_candidates_from_real_clauses() -> None:
    clauses = {
        "between": "grp BETWEEN 10 AND 20",
        "open": "grp > 15",
        "closed": "grp <= 3",
        "and": "grp >= 5 AND grp < 12 AND title LIKE 'a%'",
        "sym": "grp BETWEEN SYMMETRIC 30 AND 25",
        "numeric": "grp > 7.5",
        "or": "grp < 2 OR grp > 40",
    }
    router: Router[str] = Router()
    rel = ("public", "t")
    wheres = {name: compile_where(c, TABLE) for name, c in clauses.items()}
    for name, where in wheres.items():
        router.add(rel, name, where.routing_index())
    routes = router.tables[rel]
    assert routes.ranges and "or" in routes.scanned and "sym" in routes.scanned
    for value in [
        None,
        "-5",
        "0",
        "3",
        "4",
        "5",
        "7",
        "8",
        "10",
        "12",
        "15",
        "16",
        "20",
        "21",
        "27",
        "41",
    ]:
        row = ("1", value, "abc")
        candidates = routes.candidates(LAYOUT, row, None)
        matching = {name for name, where in wheres.items() if where.bind(LAYOUT)(row) is True}
        assert matching <= candidates, (value, matching - candidates)
        assert not {"between", "open", "closed", "and", "numeric"} & (candidates - matching), value
