"""Shapes from SQLAlchemy: every input form, the refusals, and a differential test: a
random filter compiled to a shape selects exactly the rows the same ``select()`` returns
in Postgres, both through the shape's snapshot SQL and through pysync's evaluator on the
replicated row values."""

from __future__ import annotations

import datetime
import enum
import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.string import TextLoader
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import pysync
from pysync import ShapeDefinition, ShapeError
from pysync.postgres.catalog import Table, load_table
from pysync.shapes.definition import build_shape
from pysync.where import WhereRuntimeError


class Mood(enum.Enum):
    sad = "s"
    ok = "o"
    happy = "h"


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int | None]
    price: Mapped[Decimal | None] = mapped_column(sa.Numeric(10, 2))
    name: Mapped[str | None] = mapped_column(sa.Text)
    flag: Mapped[bool | None]
    day: Mapped[datetime.date | None]
    mood: Mapped[Mood | None] = mapped_column(sa.Enum(Mood, name="mood"))
    tags: Mapped[list[str] | None] = mapped_column(ARRAY(sa.Text))
    nums: Mapped[list[int] | None] = mapped_column(ARRAY(sa.Integer))
    user: Mapped[str | None] = mapped_column("user", sa.Text)  # a reserved word, quoted


class Owner(Base):
    __tablename__ = "owners"
    __table_args__ = {"schema": "app"}
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    total: Mapped[int] = mapped_column(
        sa.Computed("id * 2", persisted=True)
    )  # STORED: a VIRTUAL one makes the table unsyncable


NAMES = ["", "a", "A", "abc", "ABC", "x%y", "a_b", "o'k", "zz", "Straße", None]
TAGS = ["a", "b", "c", "o'k", 'q"t']


def make_rows(count: int, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)

    def maybe(value: Any) -> Any:
        return None if rnd.random() < 0.12 else value

    return [
        {
            "id": i,
            "n": maybe(rnd.randint(-5, 5)),
            "price": maybe(Decimal(rnd.randint(-500, 500)) / 100),
            "name": maybe(rnd.choice(NAMES)),
            "flag": maybe(rnd.random() < 0.5),
            "day": maybe(datetime.date(2024, 1, 1) + datetime.timedelta(days=rnd.randint(0, 60))),
            "mood": maybe(rnd.choice(list(Mood))),
            "tags": maybe(rnd.sample(TAGS, rnd.randint(0, 3))),
            "nums": maybe([rnd.randint(0, 5) for _ in range(rnd.randint(0, 3))]),
            "user": maybe(rnd.choice(["ann", "bob"])),
        }
        for i in range(count)
    ]


class Db:
    def __init__(
        self, url: str, engine: sa.Engine, conn: psycopg.Connection[Any], table: Table
    ) -> None:
        self.url = url
        self.engine = engine
        self.conn = conn
        self.table = table
        self.names = [c.name for c in table.columns]
        self.text_rows: list[tuple[str | None, ...]] = []


@pytest.fixture(scope="module")
def db(pg_cluster: Any) -> Iterator[Db]:
    from pysync.testing import drop_database

    name = "sqlalchemy_shapes"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = pg_cluster.url(name)
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE SCHEMA app"))
        Base.metadata.create_all(connection)
        connection.execute(sa.insert(Item), make_rows(150, 7))
    with psycopg.connect(url, autocommit=True) as conn:
        table = load_table(conn, "public", "items")
        assert table is not None
        d = Db(url, engine, conn, table)
        for oid in {c.type_oid for c in table.columns} | {16, 23, 1700}:
            conn.adapters.register_loader(oid, TextLoader)
        d.text_rows = [tuple(r) for r in conn.execute("SELECT * FROM items ORDER BY id").fetchall()]
        yield d
    engine.dispose()
    drop_database(pg_cluster, name)


# -- the forms --------------------------------------------------------------------------


ITEM_COLUMNS = ("id", "n", "price", "name", "flag", "day", "mood", "tags", "nums", "user")


def test_input_forms() -> None:
    assert pysync.shape("items") == ShapeDefinition.create("items")
    assert pysync.shape(
        table="items", namespace="app", where="n > $1", params={1: 2}
    ) == ShapeDefinition(table="items", schema="app", where="n > $1", params=("2",))
    assert pysync.shape(Item) == ShapeDefinition(table="items", columns=ITEM_COLUMNS)
    assert pysync.shape(Item.__table__) == pysync.shape(Item)
    # Plain str, not SQLAlchemy's quoted_name: definitions are stored with msgspec.
    definition = pysync.shape(Item)
    assert {type(definition.table), type(definition.schema)} | {
        type(c) for c in definition.columns or ()
    } == {str}
    assert (
        ShapeDefinition.__struct_fields__
        and msgspec.json.decode(msgspec.json.encode(definition), type=ShapeDefinition) == definition
    )
    assert pysync.shape(Item, where="n = $1", params=[3], replica="full") == ShapeDefinition(
        table="items", where="n = $1", params=("3",), columns=ITEM_COLUMNS, replica="full"
    )
    by_expression = pysync.shape(Item, where=(Item.n == 3) & Item.name.is_(None))
    assert by_expression == ShapeDefinition(
        table="items", where="n = $1 AND name IS NULL", params=("3",), columns=ITEM_COLUMNS
    )
    assert pysync.shape(sa.select(Item).where(Item.n == 3, Item.name.is_(None))) == by_expression
    assert pysync.shape(
        sa.select(Item.id, Item.name).where(Item.mood == Mood.happy)
    ) == ShapeDefinition(
        table="items", where="mood::text = $1", params=("happy",), columns=("id", "name")
    )
    assert pysync.shape(Item, columns=["id", "n"]).columns == ("id", "n")
    # Schema, and generated columns left out.
    assert pysync.shape(Owner) == ShapeDefinition(
        table="owners", schema="app", columns=("id", "name")
    )
    # Values as Postgres reads them.
    shape = pysync.shape(
        Item,
        where=sa.and_(
            Item.day.between(datetime.date(2024, 1, 5), datetime.date(2024, 1, 9)),
            Item.flag.is_(True),
            Item.price > Decimal("1.50"),
            Item.user.in_(["ann", "o'k"]),
            sa.literal("b") == sa.any_(Item.tags),
            Item.nums.contains([1, 2]),
        ),
    )
    assert shape.where == (
        'day BETWEEN $1 AND $2 AND flag IS true AND price > $3 AND "user" IN ($4, $5) '
        "AND $6 = ANY(tags) AND nums @> $7"
    )
    assert shape.params == ("2024-01-05", "2024-01-09", "1.50", "ann", "o'k", "b", '{"1","2"}')


def test_subqueries() -> None:
    """``in_(select(...))`` is Electric's one sublink form: its WHERE compiles by the same
    rules, parameters numbered on in tree order, the table schema-qualified."""
    mine = Owner.name == "ann"
    shape = pysync.shape(Item, where=(Item.n > 1) & Item.id.in_(sa.select(Owner.id).where(mine)))
    assert (shape.where, shape.params) == (
        "n > $1 AND id IN (SELECT id FROM app.owners WHERE name = $2)",
        ("1", "ann"),
    )
    rows = pysync.shape(
        Item, where=sa.tuple_(Item.id, Item.n).not_in(sa.select(Owner.id, Owner.id))
    )
    assert rows.where == "(id, n) NOT IN (SELECT id, id FROM app.owners)"
    nested = pysync.shape(
        sa.select(Item).where(
            Item.id.in_(
                sa.select(Owner.id).where(Owner.id.in_(sa.select(Item.n).where(Item.user == "bob")))
            )
        )
    )
    assert (nested.where, nested.params) == (
        'id IN (SELECT id FROM app.owners WHERE id IN (SELECT n FROM items WHERE "user" = $1))',
        ("bob",),
    )


async def test_subquery_shape_rows_equal_select_rows(db: Db) -> None:
    """A subquery shape from SQLAlchemy, served by a real engine: its rows are the
    select()'s, also after the subquery's table changes (rows move in and out)."""
    from engine_runner import poll, quiesce, read_all
    from pysync.engine import Engine
    from pysync.shapes.consumer import LIVE
    from subquery_support import TaggedClient

    where = Item.id.in_(sa.select(Owner.id).where(Owner.name.in_(["a", "b"])))

    def expected() -> set[int]:
        with db.engine.connect() as connection:
            return {row[0] for row in connection.execute(sa.select(Item.id).where(where))}

    def served() -> set[int]:
        client = TaggedClient()
        client.apply_all(read_all(live.log))
        return {int(row["id"]) for row in client.rows.values()}

    with db.engine.begin() as connection:
        connection.execute(
            sa.insert(Owner), [{"id": i, "name": "ab"[i % 2] if i % 3 else "c"} for i in range(40)]
        )
    engine = Engine(db.url, flush_interval=0.02)
    await engine.start()
    try:
        live = await engine.shape(pysync.shape(Item, where=where))
        await poll(lambda: live.state is LIVE or live.gone, 30, "the snapshot")
        assert expected() and served() == expected()
        with db.engine.begin() as connection:
            connection.execute(sa.update(Owner).where(Owner.id < 10).values(name="c"))  # out
            connection.execute(sa.update(Owner).where(Owner.id % 3 == 0).values(name="a"))  # in
        await quiesce(engine, db.conn)
        await poll(lambda: served() == expected(), 30, "the moves to be applied")
    finally:
        await engine.stop()
        with db.engine.begin() as connection:
            connection.execute(sa.delete(Owner))


def test_one_definition_one_shape() -> None:
    def build() -> ShapeDefinition:
        return pysync.shape(Item, where=sa.or_(Item.n.in_([1, 2]), sa.not_(Item.name.ilike("a%"))))

    assert build() == build()
    assert hash(build()) == hash(build())


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (sa.select(Item).order_by(Item.id), "ORDER BY"),
        (sa.select(Item).limit(5), "LIMIT"),
        (sa.select(Item).offset(5), "OFFSET"),
        (sa.select(Item.id).group_by(Item.id), "GROUP BY"),
        (sa.select(Item).distinct(), "DISTINCT"),
        (sa.select(Item).join(Owner, Owner.id == Item.id), "joins"),
        (sa.select(Item.id, Owner.id), "exactly one table"),
        (sa.select(Item.id, sa.func.lower(Item.name)), "plain columns"),
        (sa.select(Item.name), "primary key"),
    ],
)
def test_selects_that_are_no_shape(source: Any, message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        pysync.shape(source)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (sa.func.now() > Item.day, r"function now\(\) is not in Electric's WHERE language"),
        (sa.func.length(Item.name) > 2, r"function length\(\)"),
        (Item.n % 2 == 0, "% \\(modulo\\)"),
        (Item.id.in_(sa.select(Owner.id).limit(2)), "LIMIT"),
        (
            Item.id.in_(sa.select(Owner.id).where(Owner.id == Item.n)),
            "exactly one table",
        ),  # correlated
        (Item.id.in_(sa.select(sa.func.lower(Owner.name))), "plain columns"),
        (sa.exists(sa.select(Owner.id)), "EXISTS"),
        (Owner.name == "x", "owners.name is not in items"),
        (sa.text("n > 1"), "text\\(\\) SQL"),
        (sa.case((Item.n > 1, True), else_=False), "CASE"),
        (Item.name.regexp_match("a.*"), "regexp_match"),
    ],
)
def test_expressions_outside_electrics_language(where: Any, message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        pysync.shape(Item, where=where)


def test_interrupt_forms_normalise_like_shapes() -> None:
    from pysync.app.shapes import interrupt_target
    from pysync.http.waiters import make_matcher

    mine = pysync.shape(Item, where=Item.user == "ann")
    other = pysync.shape("items", where="n > 1")
    elsewhere = pysync.shape("owners", namespace="app")
    for form, options, expected in [
        (Item, {}, {mine, other}),  # the ORM class: its table
        (Item.__table__, {}, {mine, other}),
        (Owner, {}, {elsewhere}),
        (Item, {"where": Item.user == "ann"}, {mine}),  # exactly that shape
        (sa.select(Item).where(Item.user == "ann"), {}, {mine}),
        (sa.select(Item).where(Item.user == "bob"), {}, set()),
    ]:
        matcher, narrowed = interrupt_target(form, options)
        matches = make_matcher(matcher, **narrowed)  # type: ignore[arg-type]
        assert {d for d in (mine, other, elsewhere) if matches(d)} == expected, form


# -- differential: the shape selects what the select() selects -------------------------

MOODS = list(Mood)


def _int_values() -> st.SearchStrategy[int]:
    return st.integers(-6, 6)


def leaf() -> st.SearchStrategy[Any]:
    comparisons = [
        lambda c, v: c == v,
        lambda c, v: c != v,
        lambda c, v: c < v,
        lambda c, v: c <= v,
        lambda c, v: c > v,
        lambda c, v: c >= v,
    ]
    compare = st.sampled_from(comparisons)
    date = st.dates(datetime.date(2023, 12, 25), datetime.date(2024, 3, 5))
    text = st.sampled_from([n for n in NAMES if n is not None])
    pattern = st.sampled_from(["a%", "%b%", "_", "%", "A%", "%'%", "x\\%y", "zz"])
    return st.one_of(
        st.builds(lambda op, v: op(Item.n, v), compare, _int_values()),
        st.builds(lambda op, v, k: op(Item.n + k, v), compare, _int_values(), _int_values()),
        st.builds(lambda op, v: op(Item.n * 2 - 1, v), compare, _int_values()),
        st.builds(lambda vs: Item.n.in_(vs), st.lists(_int_values(), max_size=4)),
        st.builds(lambda vs: Item.n.not_in(vs), st.lists(_int_values(), max_size=4)),
        st.builds(lambda a, b: Item.n.between(a, b), _int_values(), _int_values()),
        st.builds(lambda op, v: op(Item.price, Decimal(v) / 4), compare, st.integers(-20, 20)),
        st.builds(lambda op, v: op(Item.name, v), compare, text),
        st.builds(lambda p: Item.name.like(p), pattern),
        st.builds(lambda p: Item.name.ilike(p), pattern),
        st.builds(lambda p: Item.name.not_like(p), pattern),
        st.builds(
            lambda v: Item.name.contains(v, autoescape=False), st.sampled_from(["a", "b", "'"])
        ),
        st.builds(lambda v: Item.name.startswith(v), st.sampled_from(["a", "A", "x"])),
        st.builds(lambda v: Item.name.endswith(v), st.sampled_from(["c", "C", "b"])),
        st.builds(lambda v: sa.func.lower(Item.name) == v, st.sampled_from(["abc", "a", "straße"])),
        st.builds(lambda v: sa.func.upper(Item.name) == v, st.sampled_from(["ABC", "A"])),
        st.builds(lambda v: sa.func.coalesce(Item.name, v) == "x", st.sampled_from(["x", "y"])),
        st.builds(lambda v: Item.flag.is_(v), st.sampled_from([True, False, None])),
        st.builds(lambda v: Item.flag.is_not(v), st.sampled_from([True, False, None])),
        st.builds(lambda v: Item.flag == v, st.booleans()),
        st.just(sa.not_(Item.flag)),
        st.builds(lambda op, v: op(Item.day, v), compare, date),
        st.builds(lambda a, b: Item.day.between(a, b), date, date),
        st.builds(lambda v: Item.mood == v, st.sampled_from(MOODS)),
        st.builds(lambda op, v: op(Item.mood, v), compare, st.sampled_from(MOODS)),
        st.builds(
            lambda a, b: Item.mood.between(a, b), st.sampled_from(MOODS), st.sampled_from(MOODS)
        ),
        st.builds(lambda vs: Item.mood.in_(vs), st.lists(st.sampled_from(MOODS), max_size=3)),
        st.builds(lambda v: sa.literal(v) == sa.any_(Item.tags), st.sampled_from(TAGS)),
        st.builds(lambda vs: Item.tags.contains(vs), st.lists(st.sampled_from(TAGS), max_size=2)),
        st.builds(lambda vs: Item.tags.overlap(vs), st.lists(st.sampled_from(TAGS), max_size=2)),
        st.builds(lambda vs: Item.nums.contained_by(vs), st.lists(st.integers(0, 5), max_size=4)),
        st.builds(
            lambda v: Item.n == sa.any_(sa.literal([v, v + 1], ARRAY(sa.Integer))), _int_values()
        ),
        st.builds(lambda v: Item.user == v, st.sampled_from(["ann", "bob"])),
        st.sampled_from([Item.name.is_(None), Item.day.is_not(None), Item.tags.is_(None)]),
        st.builds(lambda v: Item.name.is_distinct_from(v), text),
        st.builds(lambda v: sa.cast(Item.n, sa.Text) == str(v), _int_values()),
    )


filters = st.recursive(
    leaf(),
    lambda children: st.one_of(
        st.builds(lambda a, b: sa.and_(a, b), children, children),
        st.builds(lambda a, b: sa.or_(a, b), children, children),
        st.builds(sa.not_, children),
    ),
    max_leaves=5,
)


@settings(
    max_examples=400, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
@given(where=filters)
def test_shape_rows_equal_select_rows(db: Db, where: Any) -> None:
    with db.engine.connect() as connection:
        expected = {row[0] for row in connection.execute(sa.select(Item.id).where(where))}
    definition = pysync.shape(Item, where=where)
    shape = build_shape(definition, db.table)
    assert shape.where is not None
    # The snapshot: the shape's SQL in Postgres.
    sql, params = shape.where.to_sql()  # type: ignore[attr-defined]
    snapshot = {r[0] for r in db.conn.execute(f"SELECT id::int4 FROM items WHERE {sql}", params)}
    assert {int(i) for i in snapshot} == expected, (definition.where, definition.params)
    # Live changes: the evaluator on the replicated (text) values of each row.
    matches = shape.where.bind(db.names)  # type: ignore[attr-defined]
    live = set()
    for row in db.text_rows:
        try:
            if matches(list(row)) is True:
                live.add(int(row[0]))  # type: ignore[arg-type]
        except WhereRuntimeError:
            pass
    assert live == expected, (definition.where, definition.params)
