"""The block flow on Airflow's CeleryExecutor: `rawflow grid up --executor celery --workers 2`.

Private Postgres (metadata database and catalogue), private Redis (broker), and the scheduler, DAG processor,
triggerer, API server and two Celery workers as separate processes; everything driven through the REST API.
test_celery_rabbitmq.py runs the end-to-end test and the broker-restart drill on a private RabbitMQ as well.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest
import yaml

from rawflow.catalogue.base import ReplicaState
from rawflow.grid import stack
from rawflow.grid.process import pid_alive
from rawflow.grid.supervise import restart_count
from rawflow.naming import DataType, block_id_for
from rawflow.sites import default_sites_path, load_sites
from tests.system.test_block_flow import (
    DAG,
    FILES_PER_DAY,
    Grid,
    _days_ago,
    _expected_assignments,
    _processes_of,
    _retry,
    _wait,
)

WORKERS = ("celery-worker-1", "celery-worker-2")
SITE_QUEUE = ("CNAF-STORM", "near-cnaf")  # a site that names its own Celery queue in the policy


@contextlib.contextmanager
def celery_grid_on(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    """A Celery grid with two workers on a private ``broker`` ("redis" or "rabbitmq"), CNAF-STORM on its own
    queue; stopped afterwards."""
    var = tmp_path_factory.mktemp(f"celery-grid-{broker}")
    os.environ.setdefault("GFAL_PYTHONBIN", "/usr/bin/python3")
    policy = load_sites(default_sites_path()).to_raw()
    policy["sites"][SITE_QUEUE[0]]["queue"] = SITE_QUEUE[1]
    sites_file = var / "sites-with-queue.yaml"
    sites_file.write_text(yaml.safe_dump(policy, sort_keys=False))
    previous = os.environ.get("RAWFLOW_SITES")
    os.environ["RAWFLOW_SITES"] = str(sites_file)
    try:
        state = stack.up(
            var,
            api_port=None,
            condor=False,
            executor="celery",
            broker=broker,
            workers=2,
            progress=lambda line: print("grid:", line),
        )
    finally:
        if previous is None:
            os.environ.pop("RAWFLOW_SITES", None)
        else:
            os.environ["RAWFLOW_SITES"] = previous
    try:
        os.environ["X509_CERT_DIR"] = str(state.values["x509_cert_dir"])
        g = Grid(state)
        for dag_id in ("rawflow_receiver", DAG):
            _retry(lambda dag_id=dag_id: g.api.unpause(dag_id), what=f"{dag_id} parsed")
        g.api.set_variable("rawflow_retransfer_backoff_seconds", "2")
        yield g
    finally:
        stack.purge(var, keep_state=True, progress=lambda line: print("grid:", line))  # logs kept, site data not


@pytest.fixture(scope="module")
def celery_grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    with celery_grid_on("redis", tmp_path_factory) as grid:
        yield grid


def _worker_of(pid: int, grid: Grid) -> str | None:
    """The Celery worker (its recorded process group) a task process runs in."""
    groups = {int(grid.state.components[name]["pid"]): name for name in WORKERS}
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except OSError:
            return None
        if int(stat[2]) in groups:  # its process group
            return groups[int(stat[2])]
        pid = int(stat[1])  # its parent
    return None


def test_celery_grid_runs_a_day_of_files_end_to_end(celery_grid: Grid) -> None:
    run_a_day_end_to_end(celery_grid, broker="redis")


def run_a_day_end_to_end(grid: Grid, *, broker: str) -> None:
    """A day's block through the Celery grid whose private broker is the component ``broker``."""
    names = set(grid.state.components)
    assert {"postgres", broker, "scheduler", "dag-processor", "triggerer", "api-server", *WORKERS} <= names
    assert "airflow" not in names  # no standalone
    assert str(grid.state.values["airflow_db"]).startswith("postgresql+psycopg2://")
    assert str(grid.state.values["catalogue_url"]).startswith("postgresql://")
    cfg = (Path(grid.state.values["airflow_home"]) / "airflow.cfg").read_text()
    assert "executor = CeleryExecutor" in cfg  # Airflow's own CLI sees the same executor

    day = _days_ago(2)
    files = grid.announce(day)
    grid.wait_registered(day, FILES_PER_DAY)
    run_id = grid.api.trigger(DAG, logical_date=f"{day}T00:00:00Z")
    assert grid.api.wait_runs(DAG, [run_id], timeout=400)[run_id] == "success"

    lfns = [lfn for lfn, _ in files]
    expected = _expected_assignments(grid, lfns)
    progress = grid.progress(day)
    assert {name: p.assigned for name, p in progress.items()} == expected
    assert all(p.processed == p.assigned and p.pending == 0 and p.problematic == 0 for p in progress.values())
    catalogue = grid.catalogue()
    try:
        summary = catalogue.block_summary(DataType.RAW, block_id_for(day))
        assert summary[grid.sites.archive.name] == {ReplicaState.ARCHIVED: FILES_PER_DAY}
        for site in grid.sites.destinations:
            assert summary.get(site.name, {}) == {ReplicaState.VALIDATED: expected[site.name]}
    finally:
        catalogue.close()
    # Each site's transfers went to its queue: CNAF-STORM's own, the default one for the rest.
    queues = {ti["rendered_map_index"]: ti["queue"] for ti in grid.api.task_instances(DAG, run_id)}
    assert queues.pop(SITE_QUEUE[0]) == SITE_QUEUE[1]
    assert set(queues.values()) == {"default"}, queues
    assert all(f"queues default,{SITE_QUEUE[1]}" in grid.state.components[w]["endpoint"] for w in WORKERS)
    # The tasks really ran on the Celery workers: each worker logged the task instances it received.
    received = {name: Path(grid.state.components[name]["log"]).read_text(errors="replace") for name in WORKERS}
    assert any("execute_workload" in text or "Received task" in text for text in received.values()), received


def _assert_every_replica_validated(grid: Grid, day: date, lfns: list[str]) -> None:
    """Every file at every target it is assigned to, validated (archived at the archive), none copied more than
    twice (at most one interrupted attempt), and the block's progress says the same."""
    progress = grid.progress(day)
    expected = _expected_assignments(grid, lfns)
    assert {name: p.assigned for name, p in progress.items()} == expected
    assert all(p.processed == p.assigned and p.pending == 0 and p.problematic == 0 for p in progress.values()), progress
    catalogue = grid.catalogue()
    try:
        for site in [*grid.sites.destinations, grid.sites.archive]:
            replicas = catalogue.replica_states(lfns, site=site.name)
            kept = [by[site.name] for by in replicas.values() if site.name in by]
            assert len(kept) == expected[site.name], site.name
            assert {info.state for info in kept} <= {ReplicaState.VALIDATED, ReplicaState.ARCHIVED}, site.name
            assert max(info.attempts for info in kept) <= 2, site.name
    finally:
        catalogue.close()


def _copies_under_way(grid: Grid, lfns: list[str]) -> Callable[[], bool]:
    """True once some replica of ``lfns`` is being copied to a destination (a block run is in flight)."""

    def check() -> bool:
        catalogue = grid.catalogue()
        try:
            for site in grid.sites.destinations:
                states = catalogue.replica_states(lfns, site=site.name)
                if any(by[site.name].state is ReplicaState.COPYING for by in states.values() if site.name in by):
                    return True
            return False
        finally:
            catalogue.close()

    return check


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and stat[0] != "Z":
                found.append(int(entry.name))
    return found


def test_redis_broker_restarted_mid_run_run_completes(celery_grid: Grid) -> None:
    broker_restart_drill(celery_grid, broker="redis")


def broker_restart_drill(grid: Grid, *, broker: str) -> None:
    """The private broker (component ``broker``) stopped for 3 s and started again while a block run copies:
    the run completes, every replica validated, both workers still up."""
    day = _days_ago(4)
    files = grid.announce(day, count=16, sizes=(2 * 1024 * 1024, 4 * 1024 * 1024))
    grid.wait_registered(day, 16)
    lfns = [lfn for lfn, _ in files]
    run_id = grid.api.trigger(DAG, logical_date=f"{day}T00:00:00Z")
    _wait(_copies_under_way(grid, lfns), "copies under way", timeout=300)
    before = dict(grid.state.components[broker])
    started = time.monotonic()
    # Down for a few seconds, then back on the same port(s) and data (Redis's append-only file, RabbitMQ's
    # durable queues): queued tasks survive.
    assert grid.state.restart_celery_broker(down_seconds=3) == broker
    after = grid.state.components[broker]
    assert after["pid"] != before["pid"] and not pid_alive(int(before["pid"]))
    assert after["endpoint"] == before["endpoint"]
    print(f"{broker} restarted in {time.monotonic() - started:.1f} s")
    assert grid.api.wait_runs(DAG, [run_id], timeout=400)[run_id] == "success"
    _assert_every_replica_validated(grid, day, lfns)
    # Both workers rode it out: still alive, and they said so in their logs (kombu reconnects by itself).
    for name in WORKERS:
        assert pid_alive(int(grid.state.components[name]["pid"])), name


def test_scheduler_sigkilled_mid_run_supervisor_restarts_it_run_completes(celery_grid: Grid) -> None:
    grid = celery_grid
    info = grid.state.components["scheduler"]
    supervisor = int(info["pid"])
    log = Path(info["log"])
    restarts_before = restart_count(log.read_text(errors="replace"))
    day = _days_ago(5)
    files = grid.announce(day, count=16, sizes=(2 * 1024 * 1024, 4 * 1024 * 1024))
    grid.wait_registered(day, 16)
    lfns = [lfn for lfn, _ in files]
    run_id = grid.api.trigger(DAG, logical_date=f"{day}T00:00:00Z")
    _wait(_copies_under_way(grid, lfns), "copies under way", timeout=300)
    schedulers = _children(supervisor)
    assert len(schedulers) == 1, schedulers
    victim = schedulers[0]
    os.kill(victim, signal.SIGKILL)
    _wait(lambda: not pid_alive(victim), "the scheduler gone", timeout=15)

    def restarted() -> bool:
        return restart_count(log.read_text(errors="replace")) > restarts_before and bool(_children(supervisor))

    _wait(restarted, "the supervisor restarting the scheduler", timeout=30)
    assert grid.api.wait_runs(DAG, [run_id], timeout=400)[run_id] == "success"
    _assert_every_replica_validated(grid, day, lfns)
    # One restart, by the same supervisor, of a scheduler that then stayed up.
    text = log.read_text(errors="replace")
    assert restart_count(text) == restarts_before + 1, text[-2000:]
    assert "exited with -9" in text
    assert pid_alive(supervisor)
    assert [pid for pid in _children(supervisor) if pid != victim]


# Last: it leaves one worker.
def test_worker_sigkilled_while_copying_task_completes_on_the_other(celery_grid: Grid) -> None:
    grid = celery_grid
    day = _days_ago(3)
    files = grid.announce(day, count=16, sizes=(4 * 1024 * 1024, 6 * 1024 * 1024))
    grid.wait_registered(day, 16)
    run_id = grid.api.trigger(DAG, logical_date=f"{day}T00:00:00Z")
    lfns = [lfn for lfn, _ in files]
    catalogue = grid.catalogue()
    try:

        def copying_to_cnaf() -> bool:
            states = catalogue.replica_states(lfns, site="CNAF-STORM")
            return any(by["CNAF-STORM"].state is ReplicaState.COPYING for by in states.values())

        _wait(copying_to_cnaf, "copies to CNAF-STORM under way", timeout=300)
        tis = {
            ti["rendered_map_index"]: ti for ti in grid.api.task_instances(DAG, run_id) if ti["task_id"] == "replicate"
        }
        tasks = _processes_of(None, tis["CNAF-STORM"]["id"])
        assert tasks, "the CNAF-STORM task process was not found"
        victim = next(filter(None, (_worker_of(pid, grid) for pid in tasks)), None)
        assert victim is not None, "the CNAF-STORM task does not run under a recorded Celery worker"
        # The whole worker dies at once: its main process, its pool and the task it runs.
        os.killpg(int(grid.state.components[victim]["pid"]), signal.SIGKILL)
        for pid in tasks:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    finally:
        catalogue.close()
    survivor = next(name for name in WORKERS if name != victim)
    _wait(lambda: not pid_alive(int(grid.state.components[victim]["pid"])), f"{victim} gone", timeout=15)

    # The scheduler sees the task's heartbeat stop, fails the try and retries it; only the survivor is left.
    assert grid.api.wait_runs(DAG, [run_id], timeout=600)[run_id] == "success"
    cnaf = [ti for ti in grid.api.task_instances(DAG, run_id) if ti["rendered_map_index"] == "CNAF-STORM"]
    assert len(cnaf) == 1 and cnaf[0]["try_number"] >= 2
    # Nobody restarted the victim: the retry ran on the survivor, the one worker left.
    assert not pid_alive(int(grid.state.components[victim]["pid"]))
    assert pid_alive(int(grid.state.components[survivor]["pid"]))
    _assert_every_replica_validated(grid, day, lfns)
