"""pysync: an embedded Postgres sync engine, wire-compatible with Electric's Shape API."""

__version__ = "0.1.0"
