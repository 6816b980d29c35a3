"""A real, local Rucio server: memcached + gunicorn serving Rucio's Flask app over a Postgres database.

The server runs from its own venv (``scripts/setup-rucio.sh`` makes ``.venv-rucio``): it pins SQLAlchemy 2.0
while Airflow needs 2.1. Rawflow talks to it over HTTP with ``rucio-clients`` from the main venv.

The root account's userpass password is random per server; it lives only in the server's private config
directory (mode 0700) and in the returned :class:`RucioServer`, never in logs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from rawflow.errors import PermanentError, TransientError
from rawflow.grid.postgres import with_driver
from rawflow.grid.process import Daemon, free_port, port_open, start_daemon, stop_group

REPO_ROOT = Path(__file__).resolve().parents[3]
RUCIO_VENV_ENV = "RAWFLOW_RUCIO_VENV"
ROOT_USERNAME = "rawflow-root"


@dataclass(frozen=True, slots=True)
class RucioServer:
    url: str
    account: str
    username: str
    password: str = field(repr=False)
    config_dir: Path
    daemons: tuple[Daemon, ...]

    def client_options(self) -> dict[str, str]:
        """Keyword options for ``get_catalogue("rucio", ...)`` / the Rucio client, userpass as root."""
        return {"host": self.url, "account": self.account, "username": self.username, "password": self.password}


def rucio_venv() -> Path:
    return Path(os.environ.get(RUCIO_VENV_ENV, REPO_ROOT / ".venv-rucio"))


def _server_config(db_url: str, cache_port: int, log_dir: Path, password: str, alembic_ini: Path) -> str:
    return f"""[common]
logdir = {log_dir}
loglevel = WARNING
[database]
default = {with_driver(db_url, "psycopg")}
pool_size = 10
max_overflow = 10
pool_reset_on_return = rollback
[cache]
url = 127.0.0.1:{cache_port}
[bootstrap]
userpass_identity = {ROOT_USERNAME}
userpass_pwd = {password}
userpass_email = rawflow@localhost
x509_identity =
gss_identity =
ssh_identity =
[alembic]
cfg = {alembic_ini}
[policy]
permission = generic
schema = generic
lfn2pfn_algorithm_default = identity
[metadata]
plugins = rucio.core.did_meta_plugins.json_meta.JSONDidMeta
"""


def _alembic_ini(db_url: str, venv: Path) -> str:
    site = next((venv / "lib").glob("python3*/site-packages"))
    return f"""[alembic]
script_location = {site / "rucio/db/sqla/migrate_repo"}
sqlalchemy.url = {with_driver(db_url, "psycopg")}
[loggers]
keys = root
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = WARN
handlers = console
[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic
[formatter_generic]
format = %(levelname)s [%(name)s] %(message)s
"""


_BOOTSTRAP = (
    "from rucio.db.sqla.util import build_database, create_base_vo, create_root_account\n"
    "build_database(); create_base_vo(); create_root_account()\n"
)


def _ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=1) as response:
            return "version" in json.loads(response.read())
    except (OSError, ValueError):
        return False


def start_rucio_server(workdir: Path, db_url: str, *, workers: int = 2, timeout: float = 60.0) -> RucioServer:
    """Bootstrap Rucio's schema into the (empty) database ``db_url`` and serve it on a free loopback port."""
    venv = rucio_venv()
    python, gunicorn = venv / "bin/python", venv / "bin/gunicorn"
    if not gunicorn.exists():
        raise PermanentError(f"no Rucio server venv at {venv}: run scripts/setup-rucio.sh")
    memcached = shutil.which("memcached")
    if memcached is None:
        raise PermanentError("memcached not installed (apt-get install memcached)")
    config_dir = workdir / "etc"
    log_dir = workdir / "log"
    config_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    config_dir.chmod(0o700)
    password = secrets.token_urlsafe(24)
    cache_port, http_port = free_port(), free_port()
    alembic_ini = config_dir / "alembic.ini"
    alembic_ini.write_text(_alembic_ini(db_url, venv))
    config = config_dir / "rucio.cfg"
    config.write_text(_server_config(db_url, cache_port, log_dir, password, alembic_ini))
    config.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUCIO_", "VIRTUAL_ENV", "PYTHON"))}
    env["RUCIO_CONFIG"] = str(config)

    done = subprocess.run(
        [str(python), "-c", _BOOTSTRAP], env=env, cwd=workdir, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise TransientError(f"Rucio schema bootstrap failed: {done.stderr.strip()[-800:]}")

    cache_argv = [memcached, "-l", "127.0.0.1", "-p", str(cache_port), "-U", "0", "-m", "64"]
    if os.geteuid() == 0:
        cache_argv += ["-u", "nobody"]
    cache = start_daemon("memcached", cache_argv, log=log_dir / "memcached.log", ready=lambda: port_open(cache_port))
    url = f"http://127.0.0.1:{http_port}"
    try:
        web = start_daemon(
            "rucio-server",
            [
                str(gunicorn),
                "--bind",
                f"127.0.0.1:{http_port}",
                "--workers",
                str(workers),
                "--timeout",
                "300",
                "--log-level",
                "warning",
                "rucio.web.rest.flaskapi.v1.main:application",
            ],
            log=log_dir / "gunicorn.log",
            env=env,
            cwd=workdir,
            ready=lambda: _ping(url),
            timeout=timeout,
        )
    except BaseException:
        stop_group(cache.pid)
        raise
    return RucioServer(
        url=url,
        account="root",
        username=ROOT_USERNAME,
        password=password,
        config_dir=config_dir,
        daemons=(web, cache),
    )


def stop_rucio_server(server: RucioServer) -> None:
    for daemon in server.daemons:
        stop_group(daemon.pid)


def main() -> None:  # pragma: no cover - a manual check: python -m rawflow.grid.rucio_server
    """Start a private Postgres and a Rucio server, print its ping answer, stop both."""
    import tempfile

    from rawflow.grid.postgres import create_database, start_postgres, stop_postgres

    pg = start_postgres()
    try:
        with tempfile.TemporaryDirectory(prefix="rawflow-rucio-") as tmp:
            server = start_rucio_server(Path(tmp), create_database(pg.url, "rucio"))
            try:
                with urllib.request.urlopen(f"{server.url}/ping", timeout=5) as response:
                    sys.stdout.write(response.read().decode() + "\n")
            finally:
                stop_rucio_server(server)
    finally:
        stop_postgres(pg)


if __name__ == "__main__":  # pragma: no cover
    main()
