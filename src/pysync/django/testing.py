"""``SyncTestCase``: Django tests whose shape requests an engine on the test database
serves, under Django's test runner (``manage.py test``).

It is a ``TransactionTestCase``: each test's writes commit, so logical replication
delivers them to the engine. Django's ``TestCase`` wraps each test in a transaction that
is rolled back, which replication never sees: its writes never reach a shape.

    class TodoShapes(SyncTestCase):
        def test_new_todo_is_synced(self):
            ...  # self.client.get("/shapes/open-todos/", {"offset": "-1"}) ...

The engine keeps its logs in memory and replicates from a temporary slot (dropped with
its connection), so the test database can be dropped after the run.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.test import TransactionTestCase

from pysync.django import engine


class SyncTestCase(TransactionTestCase):  # type: ignore[misc]  # Django ships no types
    pysync_settings: ClassVar[dict[str, Any]] = {}
    """Settings over ``settings.PYSYNC`` for this class's engine."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        # The settings now name the test database: the Sync is made from them.
        engine.replace_sync(in_memory=True, temporary_slot=True, **cls.pysync_settings)

    @classmethod
    def tearDownClass(cls) -> None:
        engine.stop_blocking()
        super().tearDownClass()
