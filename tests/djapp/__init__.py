"""A Django app for pysync.django's tests: models over many field types."""
