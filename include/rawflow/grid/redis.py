"""A private Redis (Debian's ``redis-server``) on a free loopback port: the Celery broker of a local grid.

Append-only persistence is on, so a broker restart keeps the queued tasks.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from rawflow.grid.process import Daemon, free_port, port_open, start_daemon


@dataclass(frozen=True, slots=True)
class RedisInstance:
    url: str
    port: int
    data_dir: Path
    daemon: Daemon


def redis_server_bin() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else "")
    if not found:
        raise FileNotFoundError("redis-server not found: run scripts/setup.sh (Debian package redis-server)")
    return found


def redis_argv(port: int, data_dir: Path) -> list[str]:
    return [
        redis_server_bin(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]


def start_redis(data_dir: Path, *, port: int | None = None, timeout: float = 30.0) -> RedisInstance:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    daemon = start_daemon(
        "redis",
        redis_argv(port, data_dir),
        log=data_dir / "redis.log",
        ready=lambda: port_open(port),
        timeout=timeout,
    )
    return RedisInstance(url=f"redis://127.0.0.1:{port}/0", port=port, data_dir=data_dir, daemon=daemon)
