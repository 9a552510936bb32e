"""nginx (Debian's package) running ``docker/nginx.conf`` in front of a local pysync:
rendered for 127.0.0.1 and a directory of its own, started as its own master (no system
service), stopped by PID (nginx runs in the foreground, as a child)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pysync.postgres.cluster import free_port
from system_process import stop, wait_listening

CONF = Path(__file__).resolve().parent.parent / "docker" / "nginx.conf"


def render(conf: str, origin_port: int, listen_port: int, directory: Path) -> str:
    """``docker/nginx.conf`` for a local run: the lines marked ``local:`` in it, and
    nginx's temporary files in ``directory``."""
    replacements = {
        "server pysync:3000;": f"server 127.0.0.1:{origin_port};",
        "listen 3001;": f"listen 127.0.0.1:{listen_port};",
        "/var/cache/nginx/pysync": str(directory / "cache"),
        "pid /var/run/nginx.pid;": f"pid {directory / 'nginx.pid'};",
        "error_log /dev/stderr": f"error_log {directory / 'error.log'}",
        "access_log /dev/stdout": f"access_log {directory / 'access.log'}",
        # As root, workers would run as nobody, who cannot write the directory.
        "user nginx;": "user root;" if os.geteuid() == 0 else "",
    }
    for old, new in replacements.items():
        if old not in conf:
            raise AssertionError(f"docker/nginx.conf no longer has {old!r}")
        conf = conf.replace(old, new)
    temp = "".join(
        f"\n    {name}_temp_path {directory / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return conf.replace("http {", "http {" + temp, 1)


def binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        raise AssertionError("nginx is not installed: apt-get install -y nginx (.ci/run does)")
    return found


class Nginx:
    """``nginx -g 'daemon off;'`` as a child process: stopped by its PID."""

    def __init__(self, origin_port: int, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "nginx.conf"
        conf.write_text(render(CONF.read_text(), origin_port, self.port, directory))
        self.process = subprocess.Popen(
            [binary(), "-c", str(conf), "-p", str(directory), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.pid = self.process.pid
        self.url = f"http://127.0.0.1:{self.port}"
        wait_listening(self.process, self.port, "nginx", self.errors)

    def errors(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def access_log(self) -> list[str]:
        path = self.directory / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown: it does not wait for long-polls), then SIGKILL."""
        stop(self.process)
