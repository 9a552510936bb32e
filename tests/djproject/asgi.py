"""``application``: Django's ASGI handler (the Sync starts on the first shape request);
``with_lifespan``: the same wrapped by ``pysync.django.asgi`` (started at startup,
stopped at shutdown)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

import pysync.django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproject.settings")

application = get_asgi_application()
with_lifespan = pysync.django.asgi(application)
