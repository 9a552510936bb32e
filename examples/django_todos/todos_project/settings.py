"""Settings of the todos example. The database: ``DATABASE_URL``, or a private Postgres
(todos_project/database.py). ``TODOS_SECRET_KEY`` and ``TODOS_DEBUG`` for a real
deployment; the defaults are for running it on your machine."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from todos_project.database import database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("TODOS_SECRET_KEY", "django-insecure-todos-example-only")
DEBUG = os.environ.get("TODOS_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "pysync.django",
    "todos",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # The Writer's view is a plain view behind this: a write needs the csrftoken
    # cookie's value in the X-CSRFToken header (web/main.jsx sends it).
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "todos_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
ASGI_APPLICATION = "todos_project.asgi.application"

_url = urlsplit(database_url(BASE_DIR))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
    }
}
# int4 ids: Electric's client parses int8 as a JavaScript BigInt, which JSON.stringify
# (the page's writes) refuses. auth's User has int4 ids too.
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# The engine runs in the server's process (pysync.django.asgi in asgi.py): one slot and
# publication of its own, shape logs on disk next to the private database.
PYSYNC = {
    "slot": "django_todos",
    "publication": "django_todos",
    "storage_dir": str(BASE_DIR / ".pysync" / "storage"),
    "data_dir": str(BASE_DIR / ".pysync"),
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "index"
LOGOUT_REDIRECT_URL = "login"
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "static"
USE_TZ = True
TIME_ZONE = "UTC"
