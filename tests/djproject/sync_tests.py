"""Run by Django's own test runner (``python -m django test djproject.sync_tests``) in
tests/test_django_views.py: a SyncTestCase's committed writes reach the shapes its test
client asks for."""

from __future__ import annotations

from typing import Any

from djapp.models import Item
from pysync.django.testing import SyncTestCase


def names(response: Any) -> list[str]:
    return [m["value"]["name"] for m in response.json() if "key" in m]


class UnflaggedItems(SyncTestCase):
    def test_a_write_reaches_a_live_request(self) -> None:
        first = self.client.get("/shapes/unflagged/", {"offset": "-1"})
        self.assertEqual(first.status_code, 200, first.content)
        self.assertEqual(names(first), [])
        Item.objects.create(name="committed", flag=False)
        Item.objects.create(name="flagged", flag=True)
        live = self.client.get(
            "/shapes/unflagged/",
            {
                "offset": first.headers["electric-offset"],
                "handle": first.headers["electric-handle"],
                "live": "true",
            },
        )
        self.assertEqual(names(live), ["committed"])

    def test_each_test_starts_from_an_empty_database(self) -> None:
        response = self.client.get("/shapes/unflagged/", {"offset": "-1"})
        self.assertEqual(names(response), [])
