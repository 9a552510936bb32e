"""``uvicorn todos_project.asgi:application``: Django with pysync's engine started at
server startup and stopped at shutdown (``pysync.django.asgi`` adds the lifespan
Django's handler lacks)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

import pysync.django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "todos_project.settings")
application = pysync.django.asgi(get_asgi_application())
