"""A private RabbitMQ node (Debian's ``rabbitmq-server``) on free loopback ports: the Celery broker of a local grid
started with ``--broker rabbitmq``.

The machine may run its own RabbitMQ (``rabbit@localhost`` on 5672, epmd on 4369); a fresh machine may not. This
node assumes neither and shares nothing with it: its own AMQP port, Erlang distribution port and epmd port
(``ERL_EPMD_PORT``: it never registers with, nor starts, the machine-wide epmd, which would outlive ``grid down``),
its own node name, database, logs, configuration, plugin list and HOME (the Erlang cookie). Two private nodes run
side by side.

Celery declares its queues durable and publishes its messages persistent, so a restart of the node on the same
ports and directories (:func:`restart_rabbitmq`) keeps the queued tasks.

Erlang's helpers leave the node's process group (``epmd -daemon``, ``erl_child_setup`` and ``inet_gethost`` each
start a session of their own), so every process of the node carries ``RAWFLOW_RABBITMQ_DIR=<its directory>`` in
its environment, and :func:`stop_node` stops them all through it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rawflow.grid.process import (
    Daemon,
    free_port,
    pids_with_env,
    port_open,
    start_daemon,
    started_at,
    stop_group,
    stop_processes,
)

# Not /usr/sbin/rabbitmq-server: Debian's wrapper there switches to the `rabbitmq` user, changes to
# /var/lib/rabbitmq and sends the output to /var/log/rabbitmq, the machine node's places. The script it calls
# runs the node as whoever starts it, with the environment given.
BIN_DIR = Path(os.environ.get("RAWFLOW_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
USER = "rawflow"
NODE_MARKER = "RAWFLOW_RABBITMQ_DIR"
# Airflow's Celery tasks are acknowledged late (the provider's task_acks_late, on by default): a task's message
# stays unacknowledged until the task ends. RabbitMQ closes the channel of a consumer holding a delivery longer
# than consumer_timeout (30 min by default) and hands the message out again, so a block transfer running longer
# would be cut off and run twice. Airflow finds dead workers itself (task heartbeats), so the broker's limit is
# set to 7 days: off in practice (rabbitmq.conf takes only an integer; "undefined" needs advanced.config).
CONSUMER_TIMEOUT_MS = 7 * 24 * 3600 * 1000
# A graceful stop (queues and message stores flushed) takes ~3 s when idle.
STOP_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class RabbitPorts:
    amqp: int
    dist: int
    epmd: int

    @classmethod
    def pick(cls) -> RabbitPorts:
        chosen: list[int] = []
        while len(chosen) < 3:
            port = free_port()
            if port not in chosen:
                chosen.append(port)
        return cls(amqp=chosen[0], dist=chosen[1], epmd=chosen[2])


@dataclass(frozen=True, slots=True)
class RabbitMQInstance:
    base_dir: Path
    ports: RabbitPorts
    daemon: Daemon
    password: str = field(repr=False)
    user: str = USER

    @property
    def node(self) -> str:
        return node_name(self.ports.amqp)

    @property
    def url(self) -> str:
        """The broker URL with the password: for Airflow's settings only, never for a log."""
        return broker_url(self.ports.amqp, self.user, self.password)

    @property
    def endpoint(self) -> str:
        """What `grid status` shows (no password)."""
        return f"127.0.0.1:{self.ports.amqp} (node {self.node}, epmd 127.0.0.1:{self.ports.epmd})"


def rabbitmq_server_bin() -> Path:
    path = BIN_DIR / "rabbitmq-server"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run scripts/setup.sh (Debian package rabbitmq-server)")
    return path


def node_name(amqp_port: int) -> str:
    """Named after its AMQP port: unique on the machine, and the same again on a restart (the node's database
    directory is named after the node)."""
    return f"rawflow-{amqp_port}@localhost"


def broker_url(amqp_port: int, user: str, password: str) -> str:
    # The trailing "/" is the default virtual host "/" (Celery's spelling: amqp://user:pass@host:port//).
    return f"amqp://{user}:{password}@127.0.0.1:{amqp_port}//"


def rabbitmq_config(ports: RabbitPorts, *, user: str, password: str) -> str:
    """``rabbitmq.conf`` of a private node (it holds the password: written mode 0600)."""
    return "\n".join(
        (
            "# Written by rawflow.grid.rabbitmq: a private node of the local grid.",
            f"listeners.tcp.local = 127.0.0.1:{ports.amqp}",
            "# Created on the node's first start (an empty database); not guest.",
            f"default_user = {user}",
            f"default_pass = {password}",
            "default_vhost = /",
            f"consumer_timeout = {CONSUMER_TIMEOUT_MS}",
            "log.console = false",
            "log.file.level = info",
            "",
        )
    )


def rabbitmq_env(base_dir: Path, ports: RabbitPorts) -> dict[str, str]:
    """The variables that make a node private (RabbitMQ's scripts and Erlang read them)."""
    return {
        "HOME": str(base_dir / "home"),  # the Erlang cookie, generated there on the first start
        "RABBITMQ_NODENAME": node_name(ports.amqp),
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(ports.amqp),
        "RABBITMQ_DIST_PORT": str(ports.dist),
        # The node talks to (and starts) the epmd on this port only, loopback only.
        "ERL_EPMD_PORT": str(ports.epmd),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        # The distribution port listens on every interface otherwise.
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "RABBITMQ_CONFIG_FILE": str(base_dir / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base_dir / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(base_dir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base_dir / "log"),
        # Not /etc/rabbitmq/rabbitmq-env.conf, which names the machine's node.
        "RABBITMQ_CONF_ENV_FILE": str(base_dir / "rabbitmq-env.conf"),
    }


def daemon_env(settings: Mapping[str, str], base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base_env`` without any RabbitMQ or Erlang setting it carries (``ERL_FLAGS``, a ``RABBITMQ_NODENAME`` of
    the shell), plus ``settings``."""
    base = dict(os.environ if base_env is None else base_env)
    kept = {k: v for k, v in base.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    return {**kept, **settings}


def env_file(settings: Mapping[str, str]) -> str:
    """``rabbitmq-env.conf``: the same settings, so that ``rabbitmqctl`` works by hand against the node."""
    lines = [
        "# Written by rawflow.grid.rabbitmq. By hand, as the user that runs the grid:",
        f"#   RABBITMQ_CONF_ENV_FILE={settings['RABBITMQ_CONF_ENV_FILE']} {BIN_DIR}/rabbitmqctl list_queues",
    ]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in settings.items() if key != NODE_MARKER]
    return "\n".join(lines) + "\n"


def write_node_files(base_dir: Path, ports: RabbitPorts, *, user: str, password: str) -> dict[str, str]:
    """Create the node's directories and files; returns its settings (:func:`rabbitmq_env`) with the marker."""
    base_dir.mkdir(parents=True, exist_ok=True)
    base_dir.chmod(0o700)
    for sub in ("home", "mnesia", "log"):
        (base_dir / sub).mkdir(exist_ok=True)
    settings = {**rabbitmq_env(base_dir, ports), NODE_MARKER: str(base_dir)}
    config = base_dir / "rabbitmq.conf"
    config.touch(mode=0o600)
    config.chmod(0o600)
    config.write_text(rabbitmq_config(ports, user=user, password=password))
    # No plugins: no management UI, nothing listening beyond AMQP, distribution and epmd.
    (base_dir / "enabled_plugins").write_text("[].\n")
    (base_dir / "rabbitmq-env.conf").write_text(env_file(settings))
    return settings


def amqp_answers(url: str, timeout: float = 2.0) -> bool:
    """The node accepts an AMQP connection with these credentials (it has finished booting)."""
    from kombu.connection import Connection

    try:
        # kombu (Celery's transport, from the Celery provider) has no annotations on Connection().
        with Connection(url, connect_timeout=timeout) as conn:  # type: ignore[no-untyped-call]
            conn.connect()
            return bool(conn.connected)
    except Exception:  # refused, reset, authentication failure while booting: all "not yet"
        return False


def start_rabbitmq(
    base_dir: Path,
    *,
    password: str,
    ports: RabbitPorts | None = None,
    user: str = USER,
    fresh: bool = False,
    timeout: float = 120.0,
) -> RabbitMQInstance:
    """Start a private node in ``base_dir`` and wait until it accepts ``user``/``password`` over AMQP.

    ``fresh``: delete what a previous node left in ``base_dir`` first (its queues belong to a previous grid).
    Without it, a node started again on the same ``ports`` finds its database, queues and messages again.
    """
    server = rabbitmq_server_bin()
    if fresh:
        shutil.rmtree(base_dir, ignore_errors=True)
    ports = ports or RabbitPorts.pick()
    settings = write_node_files(base_dir, ports, user=user, password=password)
    url = broker_url(ports.amqp, user, password)
    try:
        daemon = start_daemon(
            "rabbitmq",
            [str(server)],
            log=base_dir / "rabbitmq.log",
            env=daemon_env(settings),
            cwd=base_dir,
            ready=lambda: port_open(ports.amqp) and amqp_answers(url),
            timeout=timeout,
        )
    except BaseException:
        stop_processes(started_at(node_pids(base_dir)))  # the epmd it may have started
        raise
    return RabbitMQInstance(base_dir=base_dir, ports=ports, daemon=daemon, password=password, user=user)


def node_pids(base_dir: Path) -> list[int]:
    """Every live process of the node in ``base_dir``: the script, beam.smp, epmd, erl_child_setup, inet_gethost."""
    return pids_with_env(NODE_MARKER, str(base_dir))


def stop_node(pid: int, base_dir: Path, *, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the node whose script runs as ``pid`` (SIGTERM: a graceful stop; SIGKILL after ``timeout``), then
    every process it left (epmd stays up by design). True if anything was running."""
    was_running = stop_group(pid, timeout=timeout)
    left = stop_processes(started_at(node_pids(base_dir)))
    return was_running or bool(left)


def stop_rabbitmq(instance: RabbitMQInstance, *, timeout: float = STOP_TIMEOUT) -> bool:
    return stop_node(instance.daemon.pid, instance.base_dir, timeout=timeout)


def restart_rabbitmq(instance: RabbitMQInstance, *, down_seconds: float = 0.0) -> RabbitMQInstance:
    """Stop the node and start it again after ``down_seconds`` on the same ports and directories: its durable
    queues and persistent messages are back."""
    stop_rabbitmq(instance)
    time.sleep(down_seconds)
    return start_rabbitmq(instance.base_dir, password=instance.password, ports=instance.ports, user=instance.user)
