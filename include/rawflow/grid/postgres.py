"""A private PostgreSQL instance (initdb + postgres on a free loopback port) and per-use databases.

Used by the test fixtures and the benches. Postgres refuses to run as root, so when we are root the server
runs as the ``postgres`` user, in a directory of its own under the system temp dir (pytest's temp dirs are
private to root and the server could not enter them).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from rawflow.errors import PermanentError, TransientError
from rawflow.grid.process import Daemon, free_port, start_daemon, stop_group

PG_BIN = Path(os.environ.get("RAWFLOW_PG_BIN", "/usr/lib/postgresql/15/bin"))
SERVER_USER = "postgres"
TEST_URL_ENV = "RAWFLOW_TEST_PG_URL"


@dataclass(frozen=True, slots=True)
class PostgresInstance:
    """A running private server: ``url`` points at its ``postgres`` database as the superuser."""

    url: str
    port: int
    data_dir: Path
    socket_dir: Path
    daemon: Daemon


def _as_server_user() -> list[str]:
    """The command prefix that runs a program as the server user (only needed when we are root)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={SERVER_USER}", f"--regid={SERVER_USER}", "--init-groups", "--"]


def _server_user_name() -> str:
    return SERVER_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def start_postgres(*, port: int | None = None, timeout: float = 60.0) -> PostgresInstance:
    """initdb a fresh cluster (trust auth, loopback only, fsync off: test data) and start it."""
    for tool in ("initdb", "postgres", "pg_isready"):
        if not (PG_BIN / tool).exists():
            raise PermanentError(f"{PG_BIN / tool} not found (apt-get install postgresql, or set RAWFLOW_PG_BIN)")
    base = Path(tempfile.mkdtemp(prefix="rawflow-pg-"))
    data_dir, socket_dir = base / "data", base / "sock"
    socket_dir.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVER_USER)
        for path in (base, socket_dir):
            os.chown(path, user.pw_uid, user.pw_gid)
    base.chmod(0o755)
    superuser = _server_user_name()
    initdb = [
        *_as_server_user(),
        str(PG_BIN / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        superuser,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C.UTF-8",
        "--no-sync",
    ]
    done = subprocess.run(initdb, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise TransientError(f"initdb failed: {done.stderr.strip()[-500:]}")
    port = port or free_port()
    argv = [
        *_as_server_user(),
        str(PG_BIN / "postgres"),
        "-D",
        str(data_dir),
        "-p",
        str(port),
        "-k",
        str(socket_dir),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=200",
    ]

    def ready() -> bool:
        probe = [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", superuser]
        return subprocess.run(probe, check=False).returncode == 0

    daemon = start_daemon("postgres", argv, log=base / "postgres.log", ready=ready, timeout=timeout)
    url = f"postgresql://{superuser}@127.0.0.1:{port}/postgres"
    return PostgresInstance(url=url, port=port, data_dir=data_dir, socket_dir=socket_dir, daemon=daemon)


def stop_postgres(instance: PostgresInstance) -> None:
    stop_group(instance.daemon.pid)
    shutil.rmtree(instance.data_dir.parent, ignore_errors=True)


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def with_driver(url: str, driver: str) -> str:
    """``postgresql://…`` → ``postgresql+<driver>://…`` (replacing any driver already named)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}+{driver}://{rest}"


def libpq_url(url: str) -> str:
    """A SQLAlchemy-style URL as libpq reads it (no ``+driver``)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def _admin_sql(admin_url: str, statement: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction block: autocommit on a plain driver connection.
    import psycopg2

    conn = psycopg2.connect(libpq_url(admin_url))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def create_database(admin_url: str, prefix: str = "rawflow") -> str:
    """Create a fresh, uniquely named database on the server; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _admin_sql(admin_url, f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    _admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def postgres_admin_url() -> Iterator[str]:
    """An admin URL for the duration: ``$RAWFLOW_TEST_PG_URL`` if set, else a private server started and stopped here."""
    external = os.environ.get(TEST_URL_ENV)
    if external:
        yield external
        return
    instance = start_postgres()
    try:
        yield instance.url
    finally:
        stop_postgres(instance)
