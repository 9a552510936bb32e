"""Django management commands of pysync."""
