"""The block flow on Celery with a private RabbitMQ as broker: `rawflow grid up --executor celery --broker rabbitmq
--workers 2`.

The end-to-end test and the broker-restart drill of test_celery.py, on RabbitMQ; then `grid down` leaves none of
the node's Erlang processes. The other drills (a worker or the scheduler killed) do not depend on the broker and
run on Redis only (each Celery system test costs minutes).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rawflow.grid import stack
from rawflow.grid.process import pid_alive, port_open
from rawflow.grid.rabbitmq import BIN_DIR, node_pids
from tests.system.test_block_flow import Grid
from tests.system.test_celery import broker_restart_drill, celery_grid_on, run_a_day_end_to_end

pytestmark = pytest.mark.skipif(
    not (BIN_DIR / "rabbitmq-server").exists(),
    reason=f"rabbitmq-server is not installed ({BIN_DIR / 'rabbitmq-server'}; Debian package rabbitmq-server)",
)

# Where the broker password may be written: the grid's secrets, the node's own config, Airflow's config (all 0600).
PASSWORD_FILES = {"secrets.json", "rabbitmq.conf", "airflow.cfg"}


@pytest.fixture(scope="module")
def rabbitmq_grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    with celery_grid_on("rabbitmq", tmp_path_factory) as grid:
        yield grid


def test_rabbitmq_grid_runs_a_day_of_files_end_to_end(rabbitmq_grid: Grid) -> None:
    grid = rabbitmq_grid
    assert "redis" not in grid.state.components
    assert grid.state.values["celery_broker"] == "rabbitmq (private)"
    run_a_day_end_to_end(grid, broker="rabbitmq")

    info = grid.state.components["rabbitmq"]
    base_dir = Path(info["base_dir"])
    amqp = int(info["ports"]["amqp"])
    assert amqp != 5672 and port_open(amqp)
    # Celery declared Airflow's queues durable on the node (checked with rabbitmqctl the way the README says).
    listed = subprocess.run(
        [str(BIN_DIR / "rabbitmqctl"), "list_queues", "--quiet", "--no-table-headers", "name", "durable"],
        env={**os.environ, "RABBITMQ_CONF_ENV_FILE": str(base_dir / "rabbitmq-env.conf")},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    queues = dict(line.split() for line in listed.splitlines() if line.strip())
    assert queues.get("default") == "true", listed
    # The broker's password is in no log and no state file, only where it must be.
    password = grid.state.secrets()[stack.RABBITMQ_PASSWORD]
    holding = {
        path.name
        for path in grid.state.var_dir.rglob("*")
        if path.suffix in {".log", ".json", ".cfg", ".conf", ".yaml", ".txt"}
        and path.is_file()
        and password in path.read_text(errors="replace")
    }
    assert holding <= PASSWORD_FILES, holding


def test_rabbitmq_broker_restarted_mid_run_run_completes(rabbitmq_grid: Grid) -> None:
    broker_restart_drill(rabbitmq_grid, broker="rabbitmq")


# Last: it stops the grid.
def test_grid_down_leaves_no_rabbitmq_process(rabbitmq_grid: Grid) -> None:
    info = rabbitmq_grid.state.components["rabbitmq"]
    base_dir = Path(info["base_dir"])
    ports = [int(port) for port in info["ports"].values()]
    running = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in node_pids(base_dir)}
    assert {"beam.smp", "epmd"} <= set(running.values()), running

    stopped = stack.down(rabbitmq_grid.state.var_dir, progress=lambda line: print("grid:", line))
    assert "rabbitmq" in stopped
    assert not node_pids(base_dir)
    assert not [pid for pid in running if pid_alive(pid)], running
    assert not any(port_open(port) for port in ports)
    assert all(not s.running for s in stack.status(rabbitmq_grid.state.var_dir))
