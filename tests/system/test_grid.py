"""`rawflow grid up|status|down` on the real middleware: everything answers, and down leaves nothing behind."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from rawflow.compute.base import JobState
from rawflow.compute.htcondor_backend import HTCondorBackend
from rawflow.grid.condor import pool_processes
from rawflow.grid.process import marked_pids, pid_alive

REPO = Path(__file__).resolve().parents[2]


def rawflow(*args: str, var: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rawflow.cli", *args, "--var", str(var)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def test_grid_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    up = rawflow("grid", "up", "--no-airflow", var=tmp_path)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        status = rawflow("grid", "status", "--json", var=tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        parts = json.loads(status.stdout)
        names = {p["name"] for p in parts}
        assert {f"xrootd:{s}" for s in ("IHEP-EOS", "IHEP-TAPE", "CNAF-STORM", "JINR-EOS", "IN2P3-DCACHE")} <= names
        assert {"kafka", "smtp-sink", "tape-migrator", "condor"} <= names
        assert all(p["running"] for p in parts)
        assert all(p["reachable"] for p in parts if p["name"] != "tape-migrator")
        pids = [p["pid"] for p in parts]
        # The pool answers a client configured from what the grid recorded for Airflow workers.
        values = json.loads((tmp_path / "grid" / "state.json").read_text())["values"]
        backend = HTCondorBackend(condor_config=values["condor_config"], timeout=30)
        assert backend.poll(["nobody"])["nobody"].state is JobState.MISSING
        backend.close()
        condor_state = Path(values["condor_state_dir"])
        assert pool_processes(condor_state)
        assert stat.S_IMODE((Path(values["condor_token_dir"])).stat().st_mode) == 0o700
        grid_id = values["grid_id"]
        assert len(marked_pids(grid_id)) >= len(pids)  # every daemon (and its children) carries the marker
    finally:
        down = rawflow("grid", "down", var=tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"stopped {len(pids)} processes" in down.stdout
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert pool_processes(condor_state) == []  # daemons, starters and jobs of the pool
    assert values["condor_root"] not in Path("/proc/mounts").read_text()  # its mounts went with it
    assert marked_pids(grid_id) == []
    after = rawflow("grid", "status", "--json", var=tmp_path)
    assert json.loads(after.stdout) == [] and after.returncode == 1


def test_bad_site_config_is_one_line_naming_field_and_value(tmp_path: Path) -> None:
    bad = tmp_path / "sites.yaml"
    bad.write_text((REPO / "config" / "sites.yaml").read_text().replace("share: 1/3", "share: lots"))
    result = subprocess.run(
        [sys.executable, "-m", "rawflow.cli", "sites", "--config", str(bad)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "sites.IN2P3-DCACHE.share='lots'" in result.stderr


def test_unparseable_name_is_one_line_naming_field_and_value() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rawflow.cli", "name", "JUNO.12x.Physics.Global.ds-0.20251101083000.1.dat"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "rawflow: invalid RunNumber '12x': expected 1 to 10 digits "
        "(in file name 'JUNO.12x.Physics.Global.ds-0.20251101083000.1.dat')"
    )
