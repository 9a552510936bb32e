"""Router: equality-indexed and scanned shapes, candidates for old and new rows."""

from __future__ import annotations

from pysync.postgres.catalog import Column, Table
from pysync.shapes.router import Router
from pysync.shapes.where import compile_where


def column(name: str, attnum: int, type_oid: int, type_name: str, category: str) -> Column:
    return Column(name=name, attnum=attnum, type_oid=type_oid, type_name=type_name, type_mod=-1,
                  dims=0, not_null=False, type_kind="b", type_category=category)


TABLE = Table(
    oid=1, schema="public", name="t",
    columns=(column("id", 1, 23, "int4", "N"), column("grp", 2, 23, "int4", "N"),
             column("title", 3, 25, "text", "S")),
    primary_key=("id",), replica_identity="f",
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
        "grp2", "grp13", "and", "all", "like"}
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
