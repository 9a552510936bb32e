"""``python manage.py pysync ...``."""
