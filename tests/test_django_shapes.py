"""pysync.django.shape: QuerySets as shapes. The clause of each construct, the refusals,
and a property test: for random QuerySets over a model of many field types, the rows a
real engine serves for the shape are the QuerySet's rows, also after random writes."""

from __future__ import annotations

import datetime
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import pysync
from django_support import ShapeFollower, create_tables, django_database
from engine_runner import quiesce
from pysync.postgres.cluster import PostgresCluster


def test_nothing_imports_django_unless_pysync_django_is_used() -> None:
    code = (
        "import sys, pysync, pysync.app.sync, pysync.app.writer, pysync.cli, pysync.testing\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'django'], 'django imported'\n"
        "import pysync.django\n"
        "assert 'django.db.models' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def django_url(pg_cluster: PostgresCluster) -> str:
    url = django_database(pg_cluster)
    from djapp.models import Item, Member, Special, TodoList

    create_tables(TodoList, Member, Item, Special)
    return url


def test_a_queryset_is_the_shape_of_its_model_table(django_url: str) -> None:
    import pysync.django as pd
    from djapp.models import Item, OpenItem

    definition = pd.shape(Item.objects.all())
    assert (definition.schema, definition.table, definition.where) == ("public", "djapp_item", None)
    assert definition.columns == (
        "id", "name", "n", "big", "price", "score", "flag", "day", "at", "uid", "status",
        "data", "todo_list_id",
    )  # fmt: skip
    # The same QuerySet is the same shape (one handle, one interrupt match).
    assert pd.shape(Item.objects.filter(n=1)) == pd.shape(Item.objects.filter(n=1))
    # A proxy model is its concrete model's table.
    assert pd.shape(OpenItem.objects.all()) == definition
    assert pd.shape(Item.objects.none()).where == "false"


def test_pysync_shape_takes_querysets_and_models_once_pysync_django_is_imported(
    django_url: str,
) -> None:
    import pysync.django as pd
    from djapp.models import Item

    open_items = Item.objects.filter(flag=False)
    assert pysync.shape(open_items) == pd.shape(open_items)
    assert pysync.shape(Item) == pd.shape(Item.objects.all())
    assert pysync.shape(open_items, replica="full").replica == "full"
    with pytest.raises(TypeError, match="QuerySet is complete"):
        pysync.shape(open_items, where="n > 1")


def test_lookups_and_q_objects_become_where_text(django_url: str) -> None:
    from django.db.models import F, Q

    import pysync.django as pd
    from djapp.models import Item, Member, Status, TodoList

    def where(qs: Any) -> tuple[str | None, tuple[str, ...]]:
        definition = pd.shape(qs)
        return definition.where, definition.params

    assert where(Item.objects.filter(Q(n__gt=1) | ~Q(name__icontains="a%b"))) == (
        '("n" > $1) OR (NOT ((upper("name"::text) LIKE upper($2)) AND ("name" IS NOT NULL)))',
        ("1", "%a\\%b%"),
    )
    assert where(Item.objects.filter(status=Status.DONE, price__range=(Decimal("1.50"), 3))) == (
        '("price" BETWEEN $1 AND $2) AND ("status" = $3)',
        ("1.50", "3", "done"),
    )
    assert where(Item.objects.filter(day__year=2024)) == (
        '"day" BETWEEN $1 AND $2',
        ("2024-01-01", "2024-12-31"),
    )
    assert where(Item.objects.filter(at__date=datetime.date(2024, 1, 2))) == (
        "timezone('UTC', \"at\")::date = $1",
        ("2024-01-02",),
    )
    uid = uuid.UUID(int=7)
    assert where(Item.objects.filter(uid=uid, flag=None)) == (
        '("flag" IS NULL) AND ("uid" = $1)',
        (str(uid),),
    )
    assert where(Item.objects.filter(n__lte=F("big"))) == ('"n" <= "big"', ())
    assert where(Item.objects.filter(n__in=[])) == ("false", ())
    assert where(Item.objects.exclude(n__in=[])) == (None, ())
    members = Member.objects.filter(user="ann").values("todo_list_id")
    assert where(Item.objects.filter(todo_list_id__in=members, n=2)) == (
        '("n" = $1) AND ("todo_list_id" IN '
        '(SELECT "todo_list_id" FROM "djapp_member" WHERE "user" = $2))',
        ("2", "ann"),
    )
    saved = TodoList(id=41, title="saved")
    assert where(Item.objects.filter(todo_list=saved)) == ('"todo_list_id" = $1', ("41",))
    assert where(Item.objects.filter(todo_list__in=TodoList.objects.filter(title="x"))) == (
        '"todo_list_id" IN (SELECT "id" FROM "djapp_todolist" WHERE "title" = $1)',
        ("x",),
    )


def test_only_and_values_choose_columns_with_the_primary_key(django_url: str) -> None:
    import pysync.django as pd
    from djapp.models import Item

    assert pd.shape(Item.objects.only("name", "todo_list")).columns == (
        "id", "name", "todo_list_id",
    )  # fmt: skip
    assert pd.shape(Item.objects.values("n", "todo_list_id")).columns == (
        "id", "n", "todo_list_id",
    )  # fmt: skip
    assert pd.shape(Item.objects.defer("data", "at")).columns == (
        "id", "name", "n", "big", "price", "score", "flag", "day", "uid", "status",
        "todo_list_id",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda m: m.Item.objects.filter(todo_list__title="x"), "joins djapp_todolist"),
        (lambda m: m.Item.objects.filter(todo_list__title="x"), "subquery"),
        (lambda m: m.Item.objects.order_by("n"), "order_by()"),
        (lambda m: m.Item.objects.all()[:3], "slicing"),
        (lambda m: m.Item.objects.annotate(x=m.F("n")), "annotations"),
        (lambda m: m.Item.objects.extra(where=["n > 1"]), "extra(where=...)"),
        (lambda m: m.Item.objects.distinct(), "distinct()"),
        (lambda m: m.Item.objects.filter(n=1).union(m.Item.objects.all()), "union()"),
        (lambda m: m.Item.objects.filter(day__month=3), "__month"),
        (lambda m: m.Item.objects.filter(name__regex="a+"), "__regex"),
        (lambda m: m.Item.objects.raw("SELECT * FROM djapp_item"), "RawQuerySet"),
        (lambda m: m.Item.objects.filter(n=m.F("n") + 1), "arithmetic"),
        (lambda m: m.Item.objects.values("todo_list__title"), "joins djapp_todolist"),
        (lambda m: m.Item.objects.only("todo_list__title"), "follows a relation"),
        (lambda m: m.Item.objects.filter(data={"a": 1}), "data is a JSON column"),
        (lambda m: m.Special.objects.all(), "multi-table inheritance"),
    ],
)
def test_what_a_shape_cannot_say_is_refused_by_name(
    django_url: str, make: Callable[[Any], Any], words: str
) -> None:
    import types

    from django.db.models import F

    import pysync.django as pd
    from djapp import models

    with pytest.raises(pd.ShapeError) as error:
        pd.shape(make(types.SimpleNamespace(Item=models.Item, Special=models.Special, F=F)))
    assert words in str(error.value)


# -- the property test ------------------------------------------------------------------

NAMES = ["", "a", "A", "abc", "ABC", "x%y", "a_b", "o'k", "Straße", "b\\c", None]
UIDS = [uuid.UUID(int=i) for i in range(1, 4)]
USERS = ["ann", "bob", "cy"]


def random_item(rnd: random.Random, lists: list[int]) -> dict[str, Any]:
    from djapp.models import Status

    def maybe(value: Any) -> Any:
        return None if rnd.random() < 0.15 else value

    return {
        "name": rnd.choice(NAMES),
        "n": maybe(rnd.randint(-5, 5)),
        "big": rnd.randint(-5, 5),
        "price": maybe(Decimal(rnd.randint(-500, 500)) / 100),
        "score": maybe(rnd.choice([-1.5, 0.0, 0.25, 2.0])),
        "flag": maybe(rnd.random() < 0.5),
        "day": maybe(datetime.date(2023, 12, 1) + datetime.timedelta(days=rnd.randint(0, 90))),
        "at": maybe(
            datetime.datetime(2023, 12, 31, 20, tzinfo=datetime.UTC)
            + datetime.timedelta(hours=rnd.randint(0, 100))
        ),
        "uid": maybe(rnd.choice(UIDS)),
        "status": rnd.choice(list(Status)),
        "data": maybe(rnd.choice([{"a": 1}, {"a": [1, 2]}, [1], "x"])),
        "todo_list_id": maybe(rnd.choice(lists)),
    }


def random_leaf(rnd: random.Random, negated: bool) -> Any:
    from django.db.models import F, Q

    from djapp.models import Member, Status, TodoList

    day = datetime.date(2023, 12, 1) + datetime.timedelta(days=rnd.randint(0, 90))
    at = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        hours=rnd.randint(-10, 60)
    )
    text = rnd.choice(["a", "A", "b", "%", "_", "x%y", "\\", "ß", "'"])
    choices: list[Callable[[], dict[str, Any]]] = [
        lambda: {"name": rnd.choice(NAMES[:-1])},
        lambda: {"name__iexact": rnd.choice(["abc", "A", "straße"])},
        lambda: {f"name__{rnd.choice(PATTERN_LOOKUPS)}": text},
        lambda: {"n__in": rnd.sample([-2, 0, 1, 3, None], rnd.randint(0, 3))},
        lambda: {"n__contains": rnd.choice([1, -1, 5])},  # "n"::text LIKE, as Django says it
        lambda: {"uid__istartswith": str(rnd.choice(UIDS))[:30]},
        lambda: {"day__contains": rnd.choice(["-01-", "2024"])},
        lambda: {f"n__{rnd.choice(ORDERS)}": rnd.randint(-4, 4)},
        lambda: {f"price__{rnd.choice(ORDERS)}": Decimal(rnd.randint(-300, 300)) / 100},
        lambda: {f"score__{rnd.choice(ORDERS)}": rnd.choice([0, 0.25, -1])},
        lambda: {"price__range": (Decimal("-1.5"), Decimal(rnd.randint(0, 300)) / 100)},
        lambda: {f"day__{rnd.choice(ORDERS)}": day},
        lambda: {f"at__{rnd.choice(ORDERS)}": at},
        lambda: {"day__range": (day, day + datetime.timedelta(days=20))},
        lambda: {f"day__year__{rnd.choice(ORDERS)}": rnd.choice([2023, 2024])},
        lambda: {"at__year": rnd.choice([2023, 2024])},
        lambda: {f"at__date__{rnd.choice(ORDERS)}": day},
        lambda: {f"{rnd.choice(NULLABLE)}__isnull": rnd.random() < 0.5},
        lambda: {"flag": rnd.choice([True, False])},
        lambda: {"uid": rnd.choice(UIDS)},
        lambda: {"status": rnd.choice(list(Status))},
        lambda: {"status__in": rnd.sample(list(Status), 2)},
        lambda: {f"n__{rnd.choice(ORDERS)}": F("big")},
        lambda: {
            "todo_list_id__in": Member.objects.filter(user=rnd.choice(USERS)).values("todo_list_id")
        },
        lambda: {"todo_list__in": TodoList.objects.filter(title__startswith=rnd.choice("ab"))},
    ]
    # Under NOT, a subquery's change moves rows in that pysync's engine does not yet
    # send (a NOT IN whose subquery loses a value): those are left out here.
    return Q(**rnd.choice(choices[:-2] if negated else choices)())


PATTERN_LOOKUPS = ["contains", "icontains", "startswith", "istartswith", "endswith", "iendswith"]
ORDERS = ["exact", "gt", "gte", "lt", "lte"]
NULLABLE = ["name", "n", "price", "flag", "day", "at", "uid", "todo_list"]


def random_q(rnd: random.Random, negated: bool, depth: int = 0) -> Any:
    if depth >= 2 or rnd.random() < 0.4:
        return random_leaf(rnd, negated)
    negate = rnd.random() < 0.25
    inner = negated or negate
    left, right = random_q(rnd, inner, depth + 1), random_q(rnd, inner, depth + 1)
    q = left & right if rnd.random() < 0.5 else left | right
    return ~q if negate else q


def random_queryset(rnd: random.Random) -> Any:
    from djapp.models import Item

    qs = Item.objects.all()
    for _ in range(rnd.randint(1, 2)):
        exclude = rnd.random() < 0.3
        q = random_q(rnd, exclude)
        qs = qs.exclude(q) if exclude else qs.filter(q)
    if rnd.random() < 0.3:
        qs = qs.only("name", "n")
    return qs


def seed(rnd: random.Random) -> None:
    from djapp.models import Item, Member, TodoList

    TodoList.objects.all().delete()
    Item.objects.all().delete()
    lists = [TodoList.objects.create(title=t).id for t in ("a1", "a2", "b1", "c1")]
    for user in USERS:
        for list_id in rnd.sample(lists, 2):
            Member.objects.create(todo_list_id=list_id, user=user)
    Item.objects.bulk_create([Item(**random_item(rnd, lists)) for _ in range(120)])


def random_writes(rnd: random.Random) -> None:
    from django.db import transaction

    from djapp.models import Item, Member, TodoList

    lists = list(TodoList.objects.values_list("id", flat=True))
    ids = list(Item.objects.values_list("id", flat=True))
    with transaction.atomic():
        for item_id in rnd.sample(ids, 15):
            Item.objects.filter(id=item_id).update(**random_item(rnd, lists))
        Item.objects.filter(id__in=rnd.sample(ids, 5)).delete()
        Item.objects.bulk_create([Item(**random_item(rnd, lists)) for _ in range(8)])
    members = list(Member.objects.all())
    rnd.choice(members).delete()
    Member.objects.create(todo_list_id=rnd.choice(lists), user=rnd.choice(USERS))


def expected_rows(qs: Any, columns: tuple[str, ...]) -> dict[str, set[str]]:
    return {str(row["id"]): set(columns) for row in qs.values("id")}


@pytest_asyncio.fixture(loop_scope="session")
async def served(
    django_url: str,
) -> AsyncIterator[tuple[pysync.Sync, httpx.AsyncClient, dict[str, Any]]]:
    shapes: dict[str, Any] = {}
    sync = pysync.Sync(django_url, in_memory=True, env=False, slot="django_shapes")

    async def endpoint(request: Request) -> Response:
        return await sync.render(request, shapes[request.path_params["name"]], cache="public")

    app = Starlette(routes=[Route("/shapes/{name}", endpoint)])
    async with (
        sync,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://django.test"
        ) as http,
    ):
        yield sync, http, shapes


async def test_served_rows_equal_the_querysets_rows_also_after_writes(
    served: tuple[pysync.Sync, httpx.AsyncClient, dict[str, Any]], django_url: str
) -> None:
    import pysync.django as pd

    sync, http, shapes = served
    rnd = random.Random(25)
    await sync_to_async(seed)(rnd)
    querysets = [random_queryset(rnd) for _ in range(60)]
    followers = []
    for i, qs in enumerate(querysets):
        shapes[str(i)] = pd.shape(qs)
        followers.append(ShapeFollower(http, f"/shapes/{i}"))
    with psycopg.connect(django_url, autocommit=True) as fence:
        for round_ in range(4):
            if round_:
                await sync_to_async(random_writes)(rnd)
                await quiesce(sync.engine, fence)
            for qs, follower in zip(querysets, followers, strict=True):
                served_rows = await follower.catch_up()
                definition = shapes[follower.path.rsplit("/", 1)[1]]
                expected = await sync_to_async(expected_rows)(qs, definition.columns)
                got = {key.rsplit("/", 1)[1].strip('"'): set(v) for key, v in served_rows.items()}
                assert got == expected, (round_, definition.where, definition.params)


def loaded(qs: Any) -> dict[int, dict[str, Any]]:
    """The QuerySet's instances as Django loads them: primary key -> field values."""
    return {item.pk: field_values(item) for item in qs.all()}  # all(): not a cached result


def field_values(item: Any) -> dict[str, Any]:
    deferred = item.get_deferred_fields()
    return {
        f.attname: getattr(item, f.attname)
        for f in type(item)._meta.concrete_fields
        if f.attname not in deferred
    }


async def test_materialised_querysets_are_model_instances_typed_as_django_loads_them(
    served: tuple[pysync.Sync, httpx.AsyncClient, dict[str, Any]],
) -> None:
    from django.db.models import Model

    from djapp.models import Item, OpenItem

    sync, _, _ = served
    rnd = random.Random(26)
    await sync_to_async(seed)(rnd)
    qs = Item.objects.filter(n__gt=0)
    async with (
        sync.materialise(qs, timeout=10) as view,
        sync.materialise(OpenItem, timeout=10) as proxies,
        sync.materialise(Item.objects.only("name"), timeout=10) as only,
        sync.materialise(Item.objects.values("id", "n"), timeout=10) as values,
    ):
        rows = list(view.rows.values())
        assert rows and all(type(row) is Item and not row._state.adding for row in rows)
        assert {row.pk: field_values(row) for row in rows} == await sync_to_async(loaded)(qs)
        assert {type(row) for row in proxies.rows.values()} == {OpenItem}
        first = next(iter(only.rows.values()))
        assert first.get_deferred_fields() == {
            f.attname for f in Item._meta.concrete_fields if f.attname not in ("id", "name")
        }
        assert all(isinstance(row, dict) for row in values.rows.values())
        assert not any(isinstance(row, Model) for row in values.rows.values())

        def write() -> int:
            from django.db import connection, transaction

            with transaction.atomic():
                Item.objects.filter(n__gt=0).update(n=F("n") + 1, price=Decimal("1.25"))
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_current_xact_id()::text")
                    return int(cursor.fetchone()[0])

        from django.db.models import F

        await view.wait_for_txid(await sync_to_async(write)(), timeout=10)
        assert {row.pk: field_values(row) for row in view.rows.values()} == await sync_to_async(
            loaded
        )(qs)
        assert {row.price for row in view.rows.values()} == {Decimal("1.25")}
