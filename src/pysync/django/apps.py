"""``INSTALLED_APPS += ["pysync.django"]``: the app's label is ``pysync``."""

from __future__ import annotations

from django.apps import AppConfig


class PysyncConfig(AppConfig):  # type: ignore[misc]  # Django ships no types
    name = "pysync.django"
    label = "pysync"
    verbose_name = "pysync"
