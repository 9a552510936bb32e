"""Settings of ``pysync serve``: CLI flags, each with a ``PYSYNC_*`` environment variable."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class Settings(msgspec.Struct, kw_only=True):
    database_url: str | None = None
    """Replicate from this server; None starts the private Postgres in ``data_dir``."""
    host: str = "127.0.0.1"
    port: int = 3000
    secret: str | None = None
    data_dir: Path = Path(".pysync")
    storage_dir: Path | None = None
    """Shape logs; default ``<data_dir>/shapes``."""
    long_poll_timeout: float = 20.0
    publication: str = "pysync"
    slot: str = "pysync"
    log_level: str = "info"
    allow_delete: bool = False
    max_shapes: int | None = None

    @property
    def shape_storage(self) -> Path:
        return self.storage_dir or self.data_dir / "storage"


ENV = {
    "database_url": ("DATABASE_URL", "PYSYNC_DATABASE_URL"),
    "host": ("PYSYNC_HOST",),
    "port": ("PYSYNC_PORT", "PORT"),
    "secret": ("PYSYNC_SECRET", "ELECTRIC_SECRET"),
    "data_dir": ("PYSYNC_DATA_DIR",),
    "storage_dir": ("PYSYNC_STORAGE_DIR",),
    "long_poll_timeout": ("PYSYNC_LONG_POLL_TIMEOUT",),
    "publication": ("PYSYNC_PUBLICATION",),
    "slot": ("PYSYNC_SLOT",),
    "log_level": ("PYSYNC_LOG_LEVEL",),
    "allow_delete": ("PYSYNC_ALLOW_DELETE",),
    "max_shapes": ("PYSYNC_MAX_SHAPES",),
}


def from_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Settings given by environment variables (first variable of each name wins)."""
    env = os.environ if environ is None else environ
    found: dict[str, str] = {}
    for field, names in ENV.items():
        for name in names:
            if env.get(name):
                found[field] = env[name]
                break
    return found
