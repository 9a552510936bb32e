from __future__ import annotations

from django.apps import AppConfig


class TodosConfig(AppConfig):  # type: ignore[misc]  # Django ships no types
    name = "todos"

    def ready(self) -> None:
        # Connects the handlers that release waiting shape requests when access changes.
        from todos import access  # noqa: F401
