"""Settings of the test project under uvicorn: the database and slot from the environment."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

_url = urlsplit(os.environ["DJANGO_TEST_DATABASE_URL"])

SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["pysync.django", "djapp"]
ROOT_URLCONF = "djproject.urls"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": _url.username or "",
        "PASSWORD": _url.password or "",
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
    }
}
# database_url comes from DATABASES["default"].
PYSYNC = {"in_memory": True, "env": False, "slot": os.environ["DJANGO_TEST_SLOT"]}
