"""The pysync sandbox for Django's ``TestCase``: the tests of tests/djproject/sandbox_tests.py
run under Django's own test runner (on a test database it creates and drops), where
shapes are served from each test's transaction; without the sandbox, the engine never
sees a TestCase's writes."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from django_support import create_tables, django_database, run_django_tests
from pysync.postgres.cluster import PostgresCluster


@pytest.fixture(scope="module")
def django_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    url = django_database(pg_cluster)
    from djapp.models import Item, Member, Special, TodoList

    create_tables(TodoList, Member, Item, Special)
    yield url


def test_a_sandboxed_test_case_sees_its_writes_in_its_shapes(django_url: str) -> None:
    output = run_django_tests(
        django_url, "django_sandbox", "djproject.sandbox_tests.SandboxedShapes"
    )
    assert "Ran 8 tests" in output and "\nOK" in output, output
    with psycopg.connect(django_url, autocommit=True) as conn:  # the test database is gone
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'test_django_tests'")
        assert left.fetchone() is None


def test_subquery_shapes_move_rows_in_and_out_in_the_sandbox(django_url: str) -> None:
    output = run_django_tests(
        django_url, "django_sandbox", "djproject.sandbox_subquery_tests.SubqueryShapes"
    )
    assert "Ran 4 tests" in output and "\nOK" in output, output


def test_without_the_sandbox_a_test_cases_writes_never_reach_a_shape(django_url: str) -> None:
    output = run_django_tests(
        django_url, "django_sandbox", "djproject.sandbox_tests.WithoutSandbox"
    )
    assert "Ran 1 test" in output and "\nOK" in output, output
