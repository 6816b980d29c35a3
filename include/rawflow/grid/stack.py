"""The whole local grid as one unit: ``up`` starts every part, ``down`` stops them by PID, ``status`` checks.

State lives in ``<var>/grid/state.json`` (ports, PIDs, URLs) and ``<var>/grid/secrets.json`` (mode 0600:
generated tokens). Every part listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from rawflow.grid.process import (
    Daemon,
    free_port,
    grid_marker,
    grid_processes,
    pid_alive,
    port_open,
    start_daemon,
    stop_group,
    stop_marked,
    stop_processes,
    tail,
)
from rawflow.sites import default_sites_path, load_sites

if TYPE_CHECKING:
    from rawflow.grid.airflow import CeleryPlan
    from rawflow.grid.rabbitmq import RabbitMQInstance
    from rawflow.grid.xrootd import LocalSites

REPO = Path(__file__).resolve().parents[3]
# The private RabbitMQ's password in secrets.json: a new one with each node (`grid up`), which starts empty.
RABBITMQ_PASSWORD = "rabbitmq_password"


def default_var_dir() -> Path:
    import os

    return Path(os.environ.get("RAWFLOW_VAR", REPO / "var")).resolve()


@dataclass
class GridState:
    var_dir: Path
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    # Only in the process that ran `up`: the live sites, for stopping and restarting one (outage drills).
    local_sites: LocalSites | None = None

    @property
    def grid_dir(self) -> Path:
        return self.var_dir / "grid"

    @property
    def state_file(self) -> Path:
        return self.grid_dir / "state.json"

    @property
    def secrets_file(self) -> Path:
        return self.grid_dir / "secrets.json"

    def save(self) -> None:
        self.grid_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"components": self.components, "values": self.values}, indent=2))
        tmp.replace(self.state_file)

    @classmethod
    def load(cls, var_dir: Path) -> GridState:
        state = cls(var_dir=var_dir)
        if state.state_file.exists():
            raw = json.loads(state.state_file.read_text())
            state.components = raw.get("components", {})
            state.values = raw.get("values", {})
        return state

    def add(self, name: str, daemon: Daemon, **info: Any) -> None:
        self.components[name] = {"pid": daemon.pid, "log": daemon.log, **info}
        self.save()

    def stop_site(self, name: str) -> None:
        """Stop one xrootd site (an outage); its record stays so `down` still knows about it."""
        if self.local_sites is None:
            raise RuntimeError("stop_site works in the process that started the grid")
        self.local_sites.stop_site(name)

    def start_site(self, name: str) -> None:
        if self.local_sites is None:
            raise RuntimeError("start_site works in the process that started the grid")
        with self.marker():
            daemon = self.local_sites.start_site(name)
        self.add(f"xrootd:{name}", daemon, endpoint=self.local_sites.url_prefixes[name])

    def start_triggerer(self) -> None:
        """Start a separate `airflow triggerer` (e.g. after the standalone one was killed in a drill); `down`
        stops it too. It takes over the dead triggerer's triggers once that one's heartbeat is stale."""
        from rawflow.grid.airflow import AirflowPorts, airflow_bin, airflow_env

        api, worker_log, _ = self.values["airflow_ports"]
        ports = AirflowPorts(api=api, worker_log=worker_log, trigger_log=free_port())
        env = airflow_env(
            home=Path(self.values["airflow_home"]), repo=REPO, ports=ports, database_url=self.values["airflow_db"]
        )
        with self.marker():
            daemon = start_daemon(
                "triggerer",
                [airflow_bin(), "triggerer"],
                log=self.grid_dir / "triggerer.log",
                env=env,
                ready=lambda: port_open(ports.trigger_log),
                timeout=120,
            )
        self.add("triggerer", daemon, endpoint=f"127.0.0.1:{ports.trigger_log}")

    def restart_celery_broker(self, *, down_seconds: float = 0.0) -> str:
        """Stop the grid's private Celery broker (Redis or RabbitMQ) and start it again on the same port(s) and
        data directory after ``down_seconds`` (a broker-restart drill); returns its component name. Redis's
        append-only file, RabbitMQ's durable queues and persistent messages bring the queued tasks back; Celery
        workers and the scheduler reconnect by themselves. `down` stops the new process too."""
        if "redis" in self.components:
            self._restart_redis(down_seconds)
            return "redis"
        if "rabbitmq" in self.components:
            self._restart_rabbitmq(down_seconds)
            return "rabbitmq"
        raise RuntimeError("this grid has no private Celery broker (grid up --executor celery --broker redis|rabbitmq)")

    def _restart_redis(self, down_seconds: float) -> None:
        from rawflow.grid.redis import start_redis

        info = self.components["redis"]
        port = int(str(info["endpoint"]).rsplit(":", 1)[1])
        stop_group(int(info["pid"]))
        time.sleep(down_seconds)
        with self.marker():
            redis = start_redis(Path(info["data_dir"]), port=port)
        self.add("redis", redis.daemon, endpoint=f"127.0.0.1:{redis.port}", data_dir=str(redis.data_dir))

    def _restart_rabbitmq(self, down_seconds: float) -> None:
        from rawflow.grid.rabbitmq import RabbitPorts, start_rabbitmq, stop_node

        info = self.components["rabbitmq"]
        base_dir = Path(info["base_dir"])
        stop_node(int(info["pid"]), base_dir)
        time.sleep(down_seconds)
        with self.marker():
            node = start_rabbitmq(
                base_dir, password=self.secrets()[RABBITMQ_PASSWORD], ports=RabbitPorts(**info["ports"])
            )
        self.add_rabbitmq(node)

    def add_rabbitmq(self, node: RabbitMQInstance) -> None:
        ports = {"amqp": node.ports.amqp, "dist": node.ports.dist, "epmd": node.ports.epmd}
        self.add("rabbitmq", node.daemon, endpoint=node.endpoint, base_dir=str(node.base_dir), ports=ports)

    @property
    def grid_id(self) -> str | None:
        """The marker every process of this grid carries in its environment (``RAWFLOW_GRID_ID``)."""
        value = self.values.get("grid_id")
        return str(value) if value else None

    def marker(self) -> contextlib.AbstractContextManager[None]:
        return grid_marker(self.grid_id) if self.grid_id else contextlib.nullcontext()

    def secrets(self) -> dict[str, str]:
        """Tokens generated once per grid (never in code, never printed)."""
        if self.secrets_file.exists():
            stored: dict[str, str] = json.loads(self.secrets_file.read_text())
            return stored
        generated = {"storage_token": secrets.token_urlsafe(24), "fts3_token": secrets.token_urlsafe(24)}
        self._write_secrets(generated)
        return generated

    def store_secret(self, name: str, value: str) -> None:
        """Keep one more secret in secrets.json (mode 0600) beside the others."""
        self._write_secrets({**self.secrets(), name: value})

    def _write_secrets(self, values: dict[str, str]) -> None:
        self.grid_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.secrets_file.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.chmod(0o600)
        tmp.write_text(json.dumps(values))
        tmp.replace(self.secrets_file)


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    endpoint: str
    reachable: bool


def up(
    var_dir: Path | None = None,
    *,
    airflow: bool = True,
    postgres: str | None = None,
    api_port: int | None = None,
    transfer_backend: str = "gfal2",
    condor: bool = True,
    condor_cpus: int = 4,
    progress: Callable[[str], None] = print,
    executor: str = "local",
    broker: str = "redis",
    workers: int = 2,
) -> GridState:
    """Start every part not already running. ``postgres``: None (SQLite), "private" or a server URL.
    ``condor``: start the local HTCondor pool (installing its chroot once if needed) with ``condor_cpus`` slots.
    ``executor``: "local" (``airflow standalone``) or "celery": Airflow's components as separate processes with
    ``workers`` Celery workers on ``broker`` ("redis" or "rabbitmq": a private one, or a redis:// or amqp:// URL) and Postgres
    (a private one unless ``postgres`` names a server)."""
    scale = _scale_out(executor, broker, workers)
    if scale is not None and not postgres:
        postgres = "private"
    if scale is not None and scale.broker == "rabbitmq":
        from rawflow.grid.rabbitmq import rabbitmq_server_bin

        rabbitmq_server_bin()  # before anything starts: one line naming the package if it is missing
    var_dir = (var_dir or default_var_dir()).resolve()
    state = GridState.load(var_dir)
    running = {n for n, c in state.components.items() if pid_alive(int(c["pid"]))}
    if running:
        progress(f"already running: {', '.join(sorted(running))}; stopping them first")
        down(var_dir, progress=progress)
        state = GridState.load(var_dir)
    state.components = {}
    grid_dir = state.grid_dir
    grid_dir.mkdir(parents=True, exist_ok=True)
    secret = state.secrets()
    grid_id = secrets.token_hex(8)
    state.values = {"grid_id": grid_id}  # saved with the first component: `down` can always find its processes
    try:
        with grid_marker(grid_id):
            _start_all(
                state,
                var_dir,
                secret,
                airflow,
                postgres,
                api_port,
                transfer_backend,
                condor,
                condor_cpus,
                progress,
                scale,
            )
    except BaseException:
        progress("start failed: stopping what was started")
        down(var_dir, progress=progress)
        raise
    return state


def _start_condor(state: GridState, cpus: int, progress: Callable[[str], None]) -> dict[str, Any]:
    from rawflow.grid.condor import default_root, ensure_installed, root_ready, start_pool

    if not root_ready(default_root()):
        progress(f"installing the HTCondor pool's chroot into {default_root()} (once per machine, ~3 min)")
        ensure_installed()
    progress("starting the HTCondor pool")
    pool = start_pool(state.grid_dir / "condor", num_cpus=cpus)
    state.add(
        "condor",
        Daemon(name="condor", pid=pool.pid, log=str(pool.log)),
        endpoint=f"{pool.collector} (collector; CONDOR_CONFIG={pool.client_config_path})",
        state_dir=str(pool.state_dir),
    )
    return dict(pool.values())


def _start_all(
    state: GridState,
    var_dir: Path,
    secret: dict[str, str],
    airflow: bool,
    postgres: str | None,
    api_port: int | None,
    transfer_backend: str,
    condor: bool,
    condor_cpus: int,
    progress: Callable[[str], None],
    scale: ScaleOut | None = None,
) -> None:
    from rawflow.grid.broker import start_broker
    from rawflow.grid.xrootd import start_sites

    grid_dir = state.grid_dir
    progress("starting xrootd sites")
    local = start_sites(load_sites(default_sites_path()), _sites_dir(grid_dir))
    state.local_sites = local
    for name, daemon in local.daemons.items():
        state.add(f"xrootd:{name}", daemon, endpoint=local.url_prefixes[name])
    migrator = local.start_tape_migrator()
    state.add("tape-migrator", migrator, endpoint="(moves IHEP-TAPE buffer files to the MSS dir)")
    sites_path = grid_dir / "sites.yaml"
    sites_path.write_text(yaml.safe_dump(local.sites_config.to_raw(), sort_keys=False))

    condor_values: dict[str, Any] = {
        "condor_collector": "",
        "condor_config": "",
        "condor_token_dir": "",
        "condor_state_dir": "",
        "condor_root": "",
    }
    if condor:
        condor_values = _start_condor(state, condor_cpus, progress)

    progress("starting Kafka-protocol broker (Tansu)")
    broker = start_broker(grid_dir / "broker")
    state.add("kafka", broker.daemon, endpoint=broker.bootstrap)

    smtp_port = free_port()
    smtp = start_daemon(
        "smtp-sink",
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"127.0.0.1:{smtp_port}",
            "-c",
            "aiosmtpd.handlers.Debugging",
        ],
        log=grid_dir / "smtp-sink.log",
        ready=lambda: port_open(smtp_port),
    )
    state.add("smtp-sink", smtp, endpoint=f"smtp://127.0.0.1:{smtp_port} (mail lands in {smtp.log})")

    airflow_db = f"sqlite:///{var_dir / 'airflow' / 'airflow.db'}"
    catalogue_url = f"sqlite:///{grid_dir / 'catalogue.db'}"
    if postgres:
        from rawflow.grid.postgres import create_database, start_postgres, with_driver

        if postgres == "private":
            progress("starting a private Postgres")
            pg = start_postgres()
            state.add("postgres", pg.daemon, endpoint=f"127.0.0.1:{pg.port}", data_dir=str(pg.data_dir))
            admin_url = pg.url
        else:
            admin_url = postgres
        catalogue_url = create_database(admin_url, prefix="rawflow_catalogue")
        airflow_db = with_driver(create_database(admin_url, prefix="rawflow_airflow"), "psycopg2")

    state.values = {
        "grid_id": state.values["grid_id"],
        "kafka_bootstrap": broker.bootstrap,
        "catalogue_url": catalogue_url,
        "storage_token": secret["storage_token"],
        "x509_cert_dir": local.client_env["X509_CERT_DIR"],
        "fts3_url": "",
        "fts3_token": secret["fts3_token"],
        "smtp_port": smtp_port,
        "sites_path": str(sites_path),
        "transfer_backend": transfer_backend,
        "airflow_db": airflow_db,
        "dirac_work_dir": str(state.var_dir / "dirac"),  # the DIRAC backend's local-execution records and job dirs
        **condor_values,
    }
    # The token is kept in secrets.json only; state.json names the file instead.
    state.values.pop("storage_token")
    state.values.pop("fts3_token")
    state.save()
    if airflow:
        _start_airflow(state, airflow_db, api_port, progress, scale)


def _sites_dir(grid_dir: Path) -> Path:
    """Where the xrootd sites keep their data: xrootd runs as its own user, which must be able to reach it.

    A checkout under a private home (/root is 0700) cannot be reached, so the sites then live under /var/tmp,
    in a directory named after the grid's state directory (the same grid finds the same data again).
    """
    import hashlib
    import os
    import stat

    wanted = grid_dir / "xrootd"
    if all(p.stat().st_mode & stat.S_IXOTH for p in [grid_dir, *grid_dir.parents] if p.exists()):
        return wanted
    fallback = Path("/var/tmp") / f"rawflow-sites-{hashlib.sha256(str(grid_dir).encode()).hexdigest()[:12]}"
    fallback.mkdir(mode=0o755, exist_ok=True)
    os.chmod(fallback, 0o755)
    if not wanted.exists():
        wanted.symlink_to(fallback)
    return fallback


def _start_airflow(
    state: GridState,
    airflow_db: str,
    api_port: int | None,
    progress: Callable[[str], None],
    scale: ScaleOut | None = None,
) -> None:
    import subprocess

    from rawflow.grid.airflow import (
        AirflowPorts,
        airflow_env,
        celery_settings,
        ensure_admin_password,
        migrate_db,
        start_celery_components,
        start_standalone,
        write_airflow_cfg,
        write_local_settings,
    )

    home = state.var_dir / "airflow"
    ports = AirflowPorts.pick(api_port if api_port and not port_open(api_port) else None)
    # The block timetable's day boundary is the site policy's receiving-day zone; as Airflow's default zone too,
    # a plain date given to the CLI (`backfill create --from-date 2026-11-01`) is that day's local midnight.
    zone = load_sites(state.values["sites_path"]).timezone
    extra = {"AIRFLOW__RAWFLOW__RECEIVING_DAY_TIMEZONE": zone, "AIRFLOW__CORE__DEFAULT_TIMEZONE": zone}
    plan = None
    if scale is not None:
        plan = _start_celery_broker(state, scale, progress)
        extra.update(celery_settings(broker_url=plan.broker_url, airflow_db=airflow_db, concurrency=plan.concurrency))
    env = airflow_env(home=home, repo=REPO, ports=ports, database_url=airflow_db, extra=extra)
    # The bindings read CONDOR_CONFIG when imported: this grid's pool, never one the caller's environment names
    # (a test's pool that is gone by now printed "condor_config does not exist" into every task log).
    env.pop("CONDOR_CONFIG", None)
    if state.values.get("condor_config"):
        env["CONDOR_CONFIG"] = str(state.values["condor_config"])
    password = ensure_admin_password(home)
    progress("migrating the Airflow database")
    migrate_db(env, state.grid_dir / "airflow-migrate.log")
    # After the migration (which generates the file with its secrets on a first start): the same settings as the
    # standalone process, so Airflow's own CLI works by hand with AIRFLOW_HOME=var/airflow.
    write_airflow_cfg(env)
    write_local_settings(home, celery=plan is not None)
    progress("loading airflow_settings.yaml (connections, variables, pools)")
    values_file = state.grid_dir / "settings-values.json"
    values_file.write_text(json.dumps({**state.values, **state.secrets()}))
    values_file.chmod(0o600)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "rawflow_airflow.settings_loader",
            str(REPO / "airflow_settings.yaml"),
            "--values",
            str(values_file),
        ],
        env=env,
        check=True,
    )
    values_file.unlink()
    url = f"http://127.0.0.1:{ports.api}"
    if plan is None:
        progress("starting airflow standalone (scheduler, dag-processor, triggerer, API server)")
        daemon = start_standalone(env, ports, state.grid_dir / "airflow.log")
        state.add("airflow", daemon, endpoint=url, airflow_home=str(home))
    else:
        progress(
            f"starting Airflow on Celery: scheduler, dag-processor, triggerer, API server, {plan.workers} worker(s)"
        )

        def record(name: str, daemon: Daemon, endpoint: str) -> None:
            state.add(name, daemon, endpoint=endpoint, airflow_home=str(home))

        start_celery_components(env, ports, plan, state.grid_dir, record)
        state.values["executor"] = "celery"
    state.values.update(
        {
            "airflow_url": url,
            "airflow_user": "admin",
            "airflow_password_file": str(home / "passwords.json"),
            "airflow_home": str(home),
            "airflow_ports": [ports.api, ports.worker_log, ports.trigger_log],
        }
    )
    state.save()
    progress(f"Airflow UI: {url}  login: admin / {password}")


@dataclass(frozen=True, slots=True)
class ScaleOut:
    """``grid up --executor celery``: the broker ("redis" or "rabbitmq" = a private one, or a URL) and the
    worker count."""

    broker: str
    workers: int


def check_scale_out(executor: str, broker: str, workers: int) -> None:
    """Raise ValueError (one line) for a bad ``--executor``/``--broker``/``--workers`` before anything starts."""
    _scale_out(executor, broker, workers)


def _scale_out(executor: str, broker: str, workers: int) -> ScaleOut | None:
    if executor == "local":
        return None
    if executor != "celery":
        raise ValueError(f"executor must be 'local' or 'celery', not {executor!r}")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, not {workers}")
    if broker not in PRIVATE_BROKERS and not broker.startswith(("redis://", "rediss://", "amqp://", "amqps://")):
        # The value may be a URL with a password: never repeated in the message.
        shown = broker if "://" not in broker else broker.split("://", 1)[0] + "://…"
        raise ValueError(f"--broker must be 'redis', 'rabbitmq' or a redis:// or amqp:// URL, not {shown!r}")
    return ScaleOut(broker=broker, workers=workers)


# `--broker` names that start a private broker (anything else is a URL).
PRIVATE_BROKERS = ("redis", "rabbitmq")


def _start_celery_broker(state: GridState, scale: ScaleOut, progress: Callable[[str], None]) -> CeleryPlan:
    """The broker (a private Redis or RabbitMQ unless a URL was given) and the worker plan: the default queue
    plus every site's own queue (sites.yaml ``queue:``)."""
    from rawflow.grid.airflow import CeleryPlan

    broker_url = scale.broker
    if scale.broker == "redis":
        from rawflow.grid.redis import start_redis

        progress("starting a private Redis (Celery broker)")
        redis = start_redis(state.grid_dir / "redis")
        state.add("redis", redis.daemon, endpoint=f"127.0.0.1:{redis.port}", data_dir=str(redis.data_dir))
        broker_url = redis.url
    elif scale.broker == "rabbitmq":
        from rawflow.grid.rabbitmq import start_rabbitmq

        progress("starting a private RabbitMQ (Celery broker)")
        # A fresh node: what a previous grid's node left queued belongs to a metadata database that is gone.
        password = secrets.token_urlsafe(24)
        state.store_secret(RABBITMQ_PASSWORD, password)
        node = start_rabbitmq(state.grid_dir / "rabbitmq", password=password, fresh=True)
        state.add_rabbitmq(node)
        broker_url = node.url
    sites = load_sites(state.values["sites_path"])
    queues = sites.queues
    state.values["celery_broker"] = f"{scale.broker} (private)" if scale.broker in PRIVATE_BROKERS else "external"
    return CeleryPlan(broker_url=broker_url, workers=scale.workers, queues=queues)


def down(var_dir: Path | None = None, *, progress: Callable[[str], None] = print) -> list[str]:
    """Stop every recorded part by its process group, then every process still carrying the grid's marker
    (task processes and TPC helpers that left their group); returns the names stopped."""
    state = GridState.load((var_dir or default_var_dir()).resolve())
    stopped = []
    # Everything the grid started, taken before any parent dies (an orphan loses its ancestry).
    processes = grid_processes(state.grid_id, [int(c["pid"]) for c in state.components.values()])
    # Airflow first (it talks to the others), then the rest in reverse start order.
    names = sorted(state.components, key=lambda n: (n not in _AIRFLOW_FIRST, -list(state.components).index(n)))
    for name in names:
        pid = int(state.components[name]["pid"])
        if name == "rabbitmq":
            # Its Erlang helpers (epmd above all) leave its process group: stopped through its own marker.
            from rawflow.grid.rabbitmq import stop_node

            if stop_node(pid, Path(state.components[name]["base_dir"])):
                stopped.append(name)
                progress(f"stopped {name} (pid {pid})")
            continue
        if name == "condor":
            # The pool stops as a whole: daemons, starters and jobs in its mount namespace.
            from rawflow.grid.condor import stop_pool

            if stop_pool(Path(state.components[name]["state_dir"])):
                stopped.append(name)
                progress(f"stopped {name} (pid {pid})")
            continue
        if stop_group(pid):
            stopped.append(name)
            progress(f"stopped {name} (pid {pid})")
    strays = stop_processes(processes)
    if state.grid_id:
        strays = sorted(set(strays) | set(stop_marked(state.grid_id)))
    if strays:
        progress(f"stopped {len(strays)} stray process(es) of the grid outside its groups: {strays}")
    state.components = {}
    state.save()
    return stopped


# Stopped before the rest: they talk to the others (a Celery worker would otherwise see its broker vanish).
_AIRFLOW_FIRST = frozenset(
    {"airflow", "api-server", "scheduler", "dag-processor", "triggerer"} | {f"celery-worker-{i}" for i in range(1, 65)}
)


def purge(var_dir: Path, *, keep_state: bool = False, progress: Callable[[str], None] = print) -> list[str]:
    """Stop the grid and delete the sites' data, which may live outside ``var_dir`` under /var/tmp
    (``_sites_dir``), and unless ``keep_state`` the state directory too (logs included). For throw-away grids
    (tests, benches); ``down`` keeps the data for the next ``up``. Returns what ``down`` stopped."""
    import shutil

    var_dir = var_dir.resolve()
    stopped = down(var_dir, progress=progress)
    sites = GridState.load(var_dir).grid_dir / "xrootd"
    if sites.is_symlink():
        shutil.rmtree(sites.resolve(), ignore_errors=True)
        sites.unlink()
    else:
        shutil.rmtree(sites, ignore_errors=True)
    if not keep_state:
        shutil.rmtree(var_dir, ignore_errors=True)
    return stopped


def status(var_dir: Path | None = None) -> list[ComponentStatus]:
    state = GridState.load((var_dir or default_var_dir()).resolve())
    result = []
    for name, info in state.components.items():
        pid = int(info["pid"])
        endpoint = str(info.get("endpoint", ""))
        result.append(
            ComponentStatus(
                name=name, pid=pid, running=pid_alive(pid), endpoint=endpoint, reachable=_reachable(endpoint)
            )
        )
    return result


def _reachable(endpoint: str) -> bool:
    import re

    match = re.search(r"127\.0\.0\.1:(\d+)", endpoint)
    return bool(match) and port_open(int(match.group(1)))  # type: ignore[union-attr]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


__all__ = ["ComponentStatus", "GridState", "down", "purge", "status", "tail", "up"]
