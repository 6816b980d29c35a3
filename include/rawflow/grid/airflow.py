"""Run ``airflow standalone`` for the local grid, with the settings that work on this machine.

This module never imports Airflow: it builds the environment and starts the ``airflow`` executable of the
venv as a separate process group.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rawflow.grid.process import Daemon, free_port, start_daemon

ADMIN_USER = "admin"


# Airflow's [database] sql_alchemy_connect_args(_async) for the embedded SQLite database (``airflow_env``):
# sqlite3's busy timeout in seconds. Airflow adds keys to the dict it imports, so each engine gets its own.
SQLITE_CONNECT_ARGS: dict[str, object] = {"timeout": 60}
SQLITE_CONNECT_ARGS_ASYNC: dict[str, object] = {"timeout": 60}


@dataclass(frozen=True, slots=True)
class AirflowPorts:
    api: int
    worker_log: int
    trigger_log: int

    @classmethod
    def pick(cls, api: int | None = None) -> AirflowPorts:
        return cls(api=api or free_port(), worker_log=free_port(), trigger_log=free_port())


def airflow_bin() -> str:
    """The ``airflow`` executable beside the running interpreter (the project venv)."""
    candidate = Path(sys.executable).with_name("airflow")
    found = str(candidate) if candidate.exists() else shutil.which("airflow")
    if not found:
        raise FileNotFoundError("airflow executable not found: run scripts/setup.sh first")
    return found


def airflow_env(
    *,
    home: Path,
    repo: Path,
    ports: AirflowPorts,
    database_url: str | None = None,
    extra: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for every ``airflow`` command of the local grid (standalone, CLI, loader)."""
    import os

    env = dict(base_env if base_env is not None else os.environ)
    base_url = f"http://127.0.0.1:{ports.api}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(repo / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(ports.api),
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports.worker_log),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports.trigger_log),
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
            "AIRFLOW__SCHEDULER__CREATE_CRON_DATA_INTERVALS": "True",
            # Two cores: a few task processes at a time, and DAG files re-parsed twice a minute, not constantly.
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP": r"rawflow.*",
            # standalone starts its components as `airflow ...` through PATH
            "PATH": os.pathsep.join((str(Path(airflow_bin()).parent), env.get("PATH", "/usr/bin:/bin"))),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(repo / "include"), str(repo / "plugins"), env.get("PYTHONPATH", "")) if p
            ),
        }
    )
    if database_url:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = database_url
    if not database_url or database_url.startswith("sqlite"):
        # Wait for SQLite's write lock instead of failing after sqlite3's 5 s default: on 2 busy cores the
        # standalone scheduler hit "database is locked" even in WAL mode, died of it, and nothing ran afterwards.
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] = f"{__name__}.SQLITE_CONNECT_ARGS"
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC"] = f"{__name__}.SQLITE_CONNECT_ARGS_ASYNC"
    if extra:
        env.update(extra)
    return env


def ensure_admin_password(home: Path) -> str:
    """The UI password: generated once per AIRFLOW_HOME, kept in a 0600 file there (never in code)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "passwords.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        if stored.get(ADMIN_USER):
            return stored[ADMIN_USER]
    password = secrets.token_urlsafe(12)
    path.write_text(json.dumps({ADMIN_USER: password}))
    path.chmod(0o600)
    return password


def write_airflow_cfg(env: Mapping[str, str]) -> Path:
    """Make ``$AIRFLOW_HOME/airflow.cfg`` carry every ``AIRFLOW__SECTION__KEY`` setting of ``env``.

    The standalone process gets its settings from the environment; Airflow's own CLI run by hand
    (``AIRFLOW_HOME=var/airflow airflow dags list``) reads only the file. With both the same, the CLI sees the
    repository's DAGs and plugins (the block timetable), the same database and no example DAGs. Keys already
    in the file and not set here (the generated fernet key, JWT secret) are kept.
    """
    import configparser

    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    path = home / "airflow.cfg"
    # Raw: Airflow's own file escapes "%" as "%%"; read and written back untouched.
    parser = configparser.RawConfigParser()
    if path.exists():
        parser.read(path)
    for key, value in sorted(env.items()):
        parts = key.split("__")
        if len(parts) != 3 or parts[0] != "AIRFLOW" or not parts[1] or not parts[2]:
            continue
        section, option = parts[1].lower(), parts[2].lower()
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, option, value.replace("%", "%%"))
    tmp = path.with_suffix(".cfg.tmp")
    with open(tmp, "w") as out:
        out.write("# Written by `rawflow grid up` (rawflow.grid.airflow.write_airflow_cfg): the same settings as\n")
        out.write("# the standalone process, so `AIRFLOW_HOME=<this dir> airflow ...` works from the project root.\n")
        parser.write(out)
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def migrate_db(env: Mapping[str, str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        subprocess.run(
            [airflow_bin(), "db", "migrate"], env=dict(env), stdout=out, stderr=subprocess.STDOUT, check=True
        )
    url = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or f"sqlite:///{Path(env['AIRFLOW_HOME']) / 'airflow.db'}"
    if url.startswith("sqlite:///"):
        enable_wal(Path(url.removeprefix("sqlite:///").split("?")[0]))


def enable_wal(db: Path) -> None:
    """Write-ahead logging for the embedded SQLite database (it persists in the file).

    With the default rollback journal, readers and the one writer block each other: under load the scheduler,
    triggerer, API server and tasks hit "database is locked" and the standalone scheduler dies of it.
    """
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def healthy(ports: AirflowPorts) -> bool:
    """The API server answers and the scheduler, DAG processor and triggerer report healthy."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports.api}/api/v2/monitor/health", timeout=2) as resp:
            health = json.load(resp)
    except (OSError, ValueError):
        return False
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((health.get(p) or {}).get("status") == "healthy" for p in parts)


def start_standalone(env: Mapping[str, str], ports: AirflowPorts, log: Path, timeout: float = 180) -> Daemon:
    return start_daemon(
        "airflow",
        [airflow_bin(), "standalone"],
        log=log,
        env=env,
        ready=lambda: healthy(ports),
        timeout=timeout,
    )


# --- CeleryExecutor: the components as separate processes (``rawflow grid up --executor celery``) -------------

DEFAULT_QUEUE = "default"


@dataclass(frozen=True, slots=True)
class CeleryPlan:
    """How many Celery workers, on which broker, serving which queues besides the default one."""

    broker_url: str
    workers: int = 2
    queues: tuple[str, ...] = ()
    concurrency: int = 4

    def worker_queues(self) -> str:
        return ",".join(dict.fromkeys((DEFAULT_QUEUE, *self.queues)))


def celery_settings(*, broker_url: str, airflow_db: str, concurrency: int) -> dict[str, str]:
    """The Airflow settings of a Celery grid (environment form; ``write_airflow_cfg`` puts them in the file)."""
    if not airflow_db.startswith("postgresql"):
        raise ValueError(f"the CeleryExecutor needs a Postgres metadata database, not {airflow_db.split(':')[0]!r}")
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        # Task states go back through the metadata database (no second store to run).
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{airflow_db}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": DEFAULT_QUEUE,
        # One task per free slot: a worker does not hoard queued copies another idle worker could run.
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        # A message a dead worker had taken is handed out again after 10 minutes, not Airflow's default day.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "600",
        # A task whose worker died stops heart-beating (a live one beats every few seconds): fail it, then
        # retry it on another worker, after 30 s rather than Airflow's 5 minutes.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    }


def api_ready(ports: AirflowPorts) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports.api}/api/v2/monitor/health", timeout=2) as resp:
            return bool(json.load(resp))
    except (OSError, ValueError):
        return False


def _log_says(log: Path, text: str) -> bool:
    try:
        return text in log.read_text(errors="replace")
    except OSError:
        return False


def supervised(argv: list[str], max_restarts: int = 10) -> list[str]:
    """``argv`` run under the grid's own supervisor (restarted when it dies)."""
    return [sys.executable, "-m", "rawflow.grid.supervise", "--max-restarts", str(max_restarts), "--", *argv]


def start_celery_components(
    env: Mapping[str, str],
    ports: AirflowPorts,
    plan: CeleryPlan,
    grid_dir: Path,
    record: Callable[[str, Daemon, str], None],
    timeout: float = 180,
) -> None:
    """Scheduler (supervised), DAG processor, triggerer, API server and ``plan.workers`` Celery workers, each
    its own process group, each handed to ``record(name, daemon, endpoint)`` as soon as it runs (so that a
    later failure still stops it); returns once the health endpoint reports every component healthy.
    """
    airflow = airflow_bin()
    for name, argv in (
        ("scheduler", supervised([airflow, "scheduler"])),
        ("dag-processor", [airflow, "dag-processor"]),
        ("triggerer", [airflow, "triggerer"]),
    ):
        daemon = start_daemon(name, argv, log=grid_dir / f"{name}.log", env=env, ready=lambda: True)
        record(name, daemon, "(supervised: restarted when it dies)" if name == "scheduler" else "")
    api = start_daemon(
        "api-server",
        [airflow, "api-server", "--port", str(ports.api), "--host", "127.0.0.1"],
        log=grid_dir / "api-server.log",
        env=env,
        ready=lambda: api_ready(ports),
        timeout=timeout,
    )
    record("api-server", api, f"http://127.0.0.1:{ports.api}")
    for index in range(1, plan.workers + 1):
        name = f"celery-worker-{index}"
        log = grid_dir / f"{name}.log"
        # Each worker serves its task logs on its own port (two on one host would collide).
        worker_env = {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
        daemon = start_daemon(
            name,
            [
                airflow,
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--queues",
                plan.worker_queues(),
                "--concurrency",
                str(plan.concurrency),
                "--pid",
                str(grid_dir / f"{name}.pid"),
                "--without-gossip",
            ],
            log=log,
            env=worker_env,
            ready=lambda log=log: _log_says(log, " ready."),  # type: ignore[misc]
            timeout=timeout,
        )
        record(name, daemon, f"queues {plan.worker_queues()}")
    deadline = time.monotonic() + timeout
    while not healthy(ports):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Airflow components not healthy after {timeout:.0f} s")
        time.sleep(0.5)


LOCAL_SETTINGS = '''"""Written by `rawflow grid up --executor celery`: Airflow's cluster policy routing each site's transfers to the
Celery queue its site names (rawflow_airflow/policies.py). Airflow imports it from $AIRFLOW_HOME/config."""

from rawflow_airflow.policies import task_instance_mutation_hook

__all__ = ["task_instance_mutation_hook"]
'''


def write_local_settings(home: Path, *, celery: bool) -> None:
    """Install the queue-routing cluster policy for a Celery grid only; a standalone grid (LocalExecutor, which
    ignores queues) keeps Airflow's no-op policy, so its task-instance creation path is Airflow's default."""
    path = home / "config" / "airflow_local_settings.py"
    if celery:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(LOCAL_SETTINGS)
    else:
        path.unlink(missing_ok=True)
