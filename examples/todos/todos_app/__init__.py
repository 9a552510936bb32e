"""The todos example: FastAPI + SQLAlchemy + pysync (see ../README.md)."""
