"""A private RabbitMQ node (rawflow.grid.rabbitmq) with kombu, Celery's transport: start in a temp dir on free
ports, publish and consume, restart with a durable queued message surviving, stop leaving no process behind.

It coexists with a RabbitMQ of the machine (``rabbit@localhost``, 5672, epmd 4369) and with another run of this
test: its ports are free ones, its directories private, and it never registers with the machine's epmd.
"""

from __future__ import annotations

import secrets
import socket
import struct
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue

from rawflow.grid.process import pid_alive, port_open
from rawflow.grid.rabbitmq import (
    BIN_DIR,
    amqp_answers,
    broker_url,
    node_pids,
    restart_rabbitmq,
    start_rabbitmq,
    stop_rabbitmq,
)

pytestmark = pytest.mark.skipif(
    not (BIN_DIR / "rabbitmq-server").exists(),
    reason=f"rabbitmq-server is not installed ({BIN_DIR / 'rabbitmq-server'}; Debian package rabbitmq-server)",
)

MACHINE_EPMD = 4369
ERLANG_PROGRAMS = {"beam.smp", "epmd", "erl_child_setup", "inet_gethost"}


def epmd_names(port: int) -> str | None:
    """The node names an epmd on ``port`` knows (its NAMES request), None if none listens there."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(struct.pack(">H", 1) + b"n")
            reply = b""
            while chunk := conn.recv(4096):
                reply += chunk
    except OSError:
        return None
    return reply[4:].decode(errors="replace")  # after epmd's own port number


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_private_node_publishes_consumes_survives_a_restart_and_leaves_nothing(tmp_path: Path) -> None:
    machine_mq_before = port_open(5672)
    node = start_rabbitmq(tmp_path / "mq", password=secrets.token_urlsafe(24))
    try:
        ports = node.ports
        assert {ports.amqp, ports.dist, ports.epmd}.isdisjoint({5672, 25672, MACHINE_EPMD})
        # Registered with its own epmd only: the machine's (if one runs) never hears of it.
        assert f"name rawflow-{ports.amqp} at port {ports.dist}" in (epmd_names(ports.epmd) or "")
        assert f"rawflow-{ports.amqp}" not in (epmd_names(MACHINE_EPMD) or "")
        processes = {pid: command_name(pid) for pid in node_pids(node.base_dir)}
        assert {"beam.smp", "epmd"} <= set(processes.values()), processes
        # Its own user only: no guest.
        assert not amqp_answers(broker_url(ports.amqp, "guest", "guest"))

        exchange = Exchange("rawflow-test", type="direct", durable=True)
        durable = Queue("rawflow-test-durable", exchange, routing_key="durable", durable=True)
        with Connection(node.url) as conn:
            producer = conn.Producer()
            producer.publish({"n": 1}, exchange=exchange, routing_key="durable", declare=[durable])
            got = durable(conn.default_channel).get()
            assert got is not None and got.payload == {"n": 1}
            got.ack()
            # Left queued across the restart, persistent (Celery's default delivery mode, as here).
            producer.publish({"n": 2}, exchange=exchange, routing_key="durable", delivery_mode="persistent")

        old_pid = node.daemon.pid
        node = restart_rabbitmq(node, down_seconds=1)
        assert node.daemon.pid != old_pid and not pid_alive(old_pid)
        assert node.ports == ports
        assert not any(pid_alive(pid) for pid in processes), "the first run's processes outlived the restart"

        with Connection(node.url) as conn:
            got = durable(conn.default_channel).get()
            assert got is not None and got.payload == {"n": 2}
            got.ack()
            assert durable(conn.default_channel).get() is None
        processes = {pid: command_name(pid) for pid in node_pids(node.base_dir)}
    finally:
        stopped = stop_rabbitmq(node)
    assert stopped
    assert not node_pids(node.base_dir)
    left = {pid: name for pid, name in processes.items() if pid_alive(pid) and name in ERLANG_PROGRAMS}
    assert not left, f"left running after stop: {left}"
    assert not any(port_open(p) for p in (ports.amqp, ports.dist, ports.epmd))
    assert port_open(5672) == machine_mq_before  # the machine's RabbitMQ, if any, is untouched
