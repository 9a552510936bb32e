"""The Django todos example's project: settings, URLs, ASGI application (see ../README.md)."""
