"""Operations on the real local grid (`airflow standalone`, xrootd sites, Tansu): reconciliation after the broker
lost its log, the destination audit (lost → retransferred, stray → dark) and a clean `grid down` while
transfers run. One grid for the module; the last test stops it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rawflow.catalogue.base import ReplicaState
from rawflow.grid import stack
from rawflow.grid.broker import Broker, restart_broker
from rawflow.grid.process import Daemon, grid_processes, marked_pids, port_open
from rawflow.naming import DataType, block_directory_lfn, block_id_for
from tests.system.test_block_flow import Grid, _days_ago, _retry

REPO = Path(__file__).resolve().parents[2]
BLOCK_DAG = "rawflow_block_raw"
RECEIVER = "rawflow_receiver"
RECONCILE = "rawflow_reconcile"
FILES = 12


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    var = tmp_path_factory.mktemp("grid")
    os.environ.setdefault("GFAL_PYTHONBIN", "/usr/bin/python3")
    state = stack.up(var, api_port=None, progress=lambda line: print("grid:", line))
    try:
        os.environ["X509_CERT_DIR"] = str(state.values["x509_cert_dir"])
        g = Grid(state)
        for dag_id in (RECEIVER, BLOCK_DAG, RECONCILE):
            _retry(lambda dag_id=dag_id: g.api.unpause(dag_id), what=f"{dag_id} parsed")
        g.api.set_variable("rawflow_retransfer_backoff_seconds", "2")
        yield g
    finally:
        stack.purge(var, keep_state=True, progress=lambda line: print("grid:", line))  # logs kept, site data not


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def _stop_receiver(grid: Grid) -> None:
    """Pause the receiver DAG and end its running drain (deferred on the broker), so nothing is consumed."""
    grid.api.request("PATCH", f"/dags/{RECEIVER}", {"is_paused": True})
    for run in grid.api.runs(RECEIVER):
        if run["state"] in ("running", "queued"):
            grid.api.request("PATCH", f"/dags/{RECEIVER}/dagRuns/{run['dag_run_id']}", {"state": "failed"})

    def drained() -> bool:
        busy = ("running", "deferred", "queued", "scheduled", "up_for_retry")
        runs = grid.api.runs(RECEIVER)
        if any(r["state"] in ("running", "queued") for r in runs):
            return False
        tis = [ti for r in runs[-5:] for ti in grid.api.task_instances(RECEIVER, r["dag_run_id"])]
        return not any(ti["state"] in busy for ti in tis)

    _wait(drained, "the receiver to stop")
    time.sleep(3)  # the triggerer drops the drain's trigger on its next loop


def _block_files(grid: Grid, day_id: str) -> int:
    catalogue = grid.catalogue()
    try:
        block = catalogue.get_block(DataType.RAW, day_id)
        return block.files if block else 0
    finally:
        catalogue.close()


def _report(grid: Grid, run_id: str) -> dict[str, object]:
    value = grid.api.xcom(BLOCK_DAG, run_id, "report")
    assert isinstance(value, dict)
    return value


def test_broker_loses_unconsumed_announcements_reconciliation_registers_and_block_replicates(grid: Grid) -> None:
    day = _days_ago(1)  # a recent day whose block does not exist yet: every announcement of it is lost
    block_id = block_id_for(day)
    # Hold the scheduled reconciliation too, so the test sees the state between the loss and its repair.
    grid.api.request("PATCH", f"/dags/{RECONCILE}", {"is_paused": True})

    # A paused DAG starts no task; one already running is let finish. Unfinished runs count after the repair.
    def reconcile_idle() -> bool:
        runs = [r for r in grid.api.runs(RECONCILE) if r["state"] not in ("success", "failed")]
        tis = [ti for r in runs for ti in grid.api.task_instances(RECONCILE, r["dag_run_id"])]
        return not any(ti["state"] in ("running", "queued") for ti in tis)

    _wait(reconcile_idle, "reconcile idle", timeout=300)
    earlier = {r["dag_run_id"] for r in grid.api.runs(RECONCILE) if r["state"] in ("success", "failed")}
    _stop_receiver(grid)
    files = grid.announce(day, FILES, sizes=(4 * 1024, 64 * 1024))
    time.sleep(5)
    assert _block_files(grid, block_id) == 0, "the receiver consumed announcements it should not have"

    # Tansu keeps its log in memory: a restart loses the 12 unconsumed announcements.
    old = grid.state.components["kafka"]
    broker = Broker(
        port=int(str(grid.state.values["kafka_bootstrap"]).rsplit(":", 1)[1]),
        daemon=Daemon(name="tansu", pid=int(old["pid"]), log=str(old["log"])),
        workdir=grid.state.grid_dir / "broker",
    )
    with grid.state.marker():
        restarted = restart_broker(broker)
    grid.state.add("kafka", restarted.daemon, endpoint=restarted.bootstrap)
    grid.api.unpause(RECEIVER)
    time.sleep(10)
    assert _block_files(grid, block_id) == 0  # nothing left on the broker to register

    grid.api.unpause(RECONCILE)
    run_id = grid.api.trigger(RECONCILE, logical_date=datetime.now(UTC).isoformat())
    assert grid.api.wait_runs(RECONCILE, [run_id], timeout=300)[run_id] == "success"
    # The triggered run, or a scheduled one that came due meanwhile, recovered the 12 files.
    _wait(lambda: all(r["state"] in ("success", "failed") for r in grid.api.runs(RECONCILE)), "reconcile runs", 300)
    recovered: list[str] = []
    for run in grid.api.runs(RECONCILE):
        if run["dag_run_id"] not in earlier and run["state"] == "success":
            result = grid.api.xcom(RECONCILE, run["dag_run_id"], "reconcile_open_blocks")
            recovered += [
                lfn for r in result["reports"] if r["block"] == f"RAW-{block_id}" for lfn in r["recovered_lfns"]
            ]
    assert sorted(recovered) == sorted(lfn for lfn, _ in files)
    assert _block_files(grid, block_id) == FILES

    run = grid.api.trigger(BLOCK_DAG, logical_date=f"{day}T00:00:00Z")
    assert grid.api.wait_runs(BLOCK_DAG, [run], timeout=600)[run] == "success"
    catalogue = grid.catalogue()
    try:
        block = catalogue.get_block(DataType.RAW, block_id)
        assert block is not None and not block.is_open and block.files == FILES
    finally:
        catalogue.close()
    progress = grid.progress(day)
    assert {name: (p.status, p.pending, p.problematic) for name, p in progress.items()} == {
        name: ("Processed", 0, 0) for name in progress
    }
    report = _report(grid, run)
    audit = report["audit"]
    assert isinstance(audit, dict) and set(audit) == set(progress)
    assert all(a["dark_count"] == 0 and a["lost_count"] == 0 and a["error"] is None for a in audit.values())


def test_audit_finds_lost_replica_and_dark_file_and_the_lost_one_is_retransferred(grid: Grid) -> None:
    from rawflow.storage import get_storage

    day = _days_ago(1)  # the block the previous test replicated and closed
    block_id = block_id_for(day)
    catalogue = grid.catalogue()
    try:
        lfns = [f.lfn for f in catalogue.files_in_block(DataType.RAW, block_id)]
    finally:
        catalogue.close()
    assert len(lfns) == FILES, "needs the block of the reconciliation test"
    victim = next(lfn for lfn in lfns if grid.sites["CNAF-STORM"].keeps(lfn))
    local = grid.state.local_sites
    assert local is not None
    on_disk = [p for p in local.layouts["CNAF-STORM"].data_dir.rglob(Path(victim).name) if p.is_file()]
    assert len(on_disk) == 1
    on_disk[0].unlink()  # behind Rawflow's back
    stray = f"{block_directory_lfn(DataType.RAW, block_id)}/left-over'x.dat"
    storage = get_storage("gfal2", bearer_token=grid.state.secrets()["storage_token"])
    storage.put_bytes(grid.sites["JINR-EOS"].pfn(stray), b"not catalogued")

    audit = subprocess.run(
        [sys.executable, "-m", "rawflow.cli", "block", "audit", block_id, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "RAWFLOW_VAR": str(grid.state.var_dir)},
    )
    assert audit.returncode == 1, audit.stdout + audit.stderr  # inconsistent
    out = json.loads(audit.stdout)
    by_site = {a["site"]: a for a in out["audits"]}
    assert list(by_site["CNAF-STORM"]["lost"]) == [victim]
    assert by_site["CNAF-STORM"]["lost"][victim].startswith("lost: not on CNAF-STORM")
    assert by_site["CNAF-STORM"]["marked_bad"] == 1
    assert by_site["JINR-EOS"]["dark"] == [stray] and by_site["JINR-EOS"]["lost_count"] == 0
    assert all(
        a["dark_count"] == 0 and a["lost_count"] == 0 for s, a in by_site.items() if s not in ("CNAF-STORM", "JINR-EOS")
    )
    catalogue = grid.catalogue()
    try:
        info = catalogue.replica_states([victim], site="CNAF-STORM")[victim]["CNAF-STORM"]
        assert info.state is ReplicaState.BAD and (info.error or "").startswith("lost:")
    finally:
        catalogue.close()

    rerun = out["retransfer_run_id"]
    assert rerun
    assert grid.api.wait_runs(BLOCK_DAG, [rerun], timeout=600)[rerun] == "success"
    catalogue = grid.catalogue()
    try:
        info = catalogue.replica_states([victim], site="CNAF-STORM")[victim]["CNAF-STORM"]
        assert info.state is ReplicaState.VALIDATED and info.attempts == 2
    finally:
        catalogue.close()
    assert [p for p in local.layouts["CNAF-STORM"].data_dir.rglob(Path(victim).name) if p.is_file()]
    # The retransfer run's report audited again: nothing lost any more, the stray file is still listed, not deleted.
    after = _report(grid, rerun)["audit"]
    assert isinstance(after, dict)
    assert after["CNAF-STORM"]["lost_count"] == 0 and after["JINR-EOS"]["dark"] == [stray]
    assert storage.exists(grid.sites["JINR-EOS"].pfn(stray))

    # The view's drill-down shows the audit (names escaped); its API returns the same findings.
    token = _token(grid)
    api = json.loads(_get(grid, f"/rawflow/api/blocks/RAW-{block_id}?limit=1", token))
    assert api["audits"]["JINR-EOS"]["dark"] == [stray] and api["audits"]["CNAF-STORM"]["lost_count"] == 0
    page = _get(grid, f"/rawflow/blocks/RAW-{block_id}", token, accept="text/html")
    assert "Consistency audit at the sites" in page
    assert "left-over&#39;x.dat" in page and "left-over'x.dat" not in page


def test_grid_down_while_transfers_run_leaves_no_grid_process(grid: Grid) -> None:
    day = _days_ago(4)
    grid.announce(day, 40, sizes=(2 * 1024 * 1024, 4 * 1024 * 1024))
    grid.wait_registered(day, 40, timeout=180)
    grid.api.trigger(BLOCK_DAG, logical_date=f"{day}T00:00:00Z")

    def copying() -> bool:
        catalogue = grid.catalogue()
        try:
            states = catalogue.replica_states(block=(DataType.RAW, block_id_for(day)))
        finally:
            catalogue.close()
        return any(info.state is ReplicaState.COPYING for at in states.values() for info in at.values())

    _wait(copying, "a transfer in flight", timeout=300)
    grid_id = grid.state.grid_id
    assert grid_id
    components = dict(grid.state.components)
    groups = [int(c["pid"]) for c in components.values()]
    before = grid_processes(grid_id, groups)
    outside = {pid: _cmdline(pid) for pid in before if _pgid(pid) not in groups}
    print("grid processes outside the recorded groups before down:", outside)
    ports = [int(m) for c in components.values() for m in re.findall(r"127\.0\.0\.1:(\d+)", str(c.get("endpoint")))]
    assert len(ports) >= 7

    stack.down(grid.state.var_dir, progress=lambda line: print("grid:", line))

    assert marked_pids(grid_id) == []
    assert grid_processes(grid_id, groups) == {}
    survivors = {pid: _cmdline(pid) for pid, started in before.items() if _start_time(pid) == started}
    assert survivors == {}
    assert [p for p in ports if port_open(p)] == []


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return []


def _pgid(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[2]) if fields else None


def _start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields and fields[0] != "Z" else None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


def _token(grid: Grid) -> str:
    values = grid.state.values
    password = json.loads(Path(values["airflow_password_file"]).read_text())[values["airflow_user"]]
    body = json.dumps({"username": values["airflow_user"], "password": password}).encode()
    request = urllib.request.Request(
        f"{values['airflow_url']}/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return str(json.load(resp)["access_token"])


def _get(grid: Grid, path: str, token: str, accept: str = "application/json") -> str:
    request = urllib.request.Request(f"{grid.state.values['airflow_url']}{path}", headers={"Accept": accept})
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as resp:
        return str(resp.read().decode())
