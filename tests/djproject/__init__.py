"""A Django project for pysync.django's tests: served by uvicorn in a subprocess (its
settings from the environment) and in-process (``django_support`` configures the same
URLs)."""
