"""A production campaign in live Airflow: its steering file in the campaigns folder → the DAG processor makes
``rawflow_campaign_<name>`` (paused) → unpaused and triggered, it runs a complete RTRAW block through DIRAC's
local execution (the grid's ``rawflow_compute_dirac`` Connection, the real DIRAC client in .venv-dirac) →
ESD checked and registered with lineage → replicated to both destination SEs and validated → the campaign's
status (CLI and the view's API) 100 % → a second run submits 0 jobs. A broken steering file beside it is one
line in Airflow's import errors (``rawflow_campaign_errors.py``) and does not stop the campaign's DAG.

Airflow runs as ``airflow standalone`` (rawflow.grid.stack.up, as ``make demo`` does; no HTCondor pool: the
campaign runs on DIRAC), driven through its REST API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from rawflow.catalogue.base import FileRecord, ReplicaState
from rawflow.grid import stack
from rawflow.naming import DataType, RawFileName, block_id_for, lfn_for
from rawflow.payloads.rawformat import synthesize
from rawflow.processing.campaign_round import campaign_output_lfn
from rawflow.processing.jobs import JobStore
from rawflow.processing.planning import JobPhase
from tests.system.test_block_flow import Grid, _retry

ROOT = Path(__file__).resolve().parents[2]
DIRAC_PYTHON = ROOT / ".venv-dirac" / "bin" / "python"
FILES = 2  # one wave on the DIRAC backend's 2 local slots
INPUT_SITE = "CNAF-STORM"
DESTINATIONS = ["CNAF-STORM", "IN2P3-DCACHE"]
# Older than keep-up's catch-up window: only the campaign touches this block.
DAY = datetime.now(UTC).date() - timedelta(days=20)
BLOCK = block_id_for(DAY)
NAME = f"sysrerec-{uuid.uuid4().hex[:6]}"
DAG_ID = f"rawflow_campaign_{NAME}"
BROKEN = "broken.yaml"

pytestmark = pytest.mark.skipif(not DIRAC_PYTHON.exists(), reason="scripts/setup-dirac.sh was not run")


def _steering() -> dict[str, object]:
    return {
        "name": NAME,
        "kind": "reprocessing",
        "description": "system test: one RTRAW block reconstructed again on DIRAC",
        "input": {"data_type": "RTRAW", "site": INPUT_SITE, "blocks": [BLOCK]},
        "steps": [{"name": "rec", "payload": "rec", "output_data_type": "ESD"}],
        "backend": "dirac",
        "site": "LCG.CNAF.it",
        "splitter": {"by": "files", "files_per_job": 1},
        "output": {"data_type": "ESD", "destinations": DESTINATIONS},
        "priority": 5,
        "max_attempts": 2,
    }


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    var = tmp_path_factory.mktemp("campaign-grid")
    folder = var / "campaigns"
    folder.mkdir()
    (folder / f"{NAME}.yaml").write_text(yaml.safe_dump(_steering(), sort_keys=False))
    # A steering file with a mistake beside it: an import error of rawflow_campaign_errors.py, never this DAG's.
    broken = {**_steering(), "name": f"{NAME}-broken", "backend": "slurm"}
    (folder / BROKEN).write_text(yaml.safe_dump(broken, sort_keys=False))
    saved = os.environ.get("RAWFLOW_CAMPAIGNS_DIR")
    os.environ["RAWFLOW_CAMPAIGNS_DIR"] = str(folder)  # Airflow's processes inherit it
    os.environ.setdefault("GFAL_PYTHONBIN", "/usr/bin/python3")
    try:
        # Airflow and the catalogue on Postgres, as in production: on 2 loaded cores the embedded SQLite's single
        # write lock stalled Airflow's API server and killed its scheduler ("database is locked") mid-test.
        # The embedded default is covered by test_ui, test_shifter, test_ops and test_grid.
        state = stack.up(
            var,
            api_port=None,
            condor=False,
            postgres=os.environ.get("RAWFLOW_TEST_PG_URL") or "private",
            progress=lambda line: print("grid:", line),
        )
        try:
            os.environ["X509_CERT_DIR"] = str(state.values["x509_cert_dir"])
            yield Grid(state)
        finally:
            stack.purge(var, keep_state=True, progress=lambda line: print("grid:", line))  # logs kept, site data not
    finally:
        if saved is None:
            os.environ.pop("RAWFLOW_CAMPAIGNS_DIR", None)
        else:
            os.environ["RAWFLOW_CAMPAIGNS_DIR"] = saved


def _seed_rtraw_block(grid: Grid, day: date, count: int) -> list[str]:
    """A complete RTRAW block as keep-up and the RTRAW block DAG leave it: made by the real raw2rtraw payload,
    at the Tier-0 and at the input site, registered there as validated, the block closed."""
    from rawflow.storage import get_storage

    storage = get_storage("gfal2", bearer_token=grid.state.secrets()["storage_token"])
    tier0 = grid.sites.tier0
    work = Path(tempfile.mkdtemp(prefix="rawflow-campaign-seed-"))
    records = []
    for seq in range(1, count + 1):
        run = 7000 + day.day
        name = RawFileName.build(
            daq="JUNO",
            run_number=run,
            stream_type="Physics",
            stream_name="Global",
            file_tag=f"s{uuid.uuid4().hex[:4]}",
            file_time=datetime(day.year, day.month, day.day, 10, 0, seq),
            file_sequence=seq,
        )
        raw, _ = synthesize(run=run, stream="Global", sequence=seq, start_time_ns=seq * 10**9, size=16_000)
        raw_path = work / name.name
        raw_path.write_bytes(raw)
        rtraw_path = raw_path.with_suffix(".rtraw")
        subprocess.run(
            [sys.executable, "-m", "rawflow.payloads", "raw2rtraw", str(raw_path), str(rtraw_path)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        data = rtraw_path.read_bytes()
        lfn = lfn_for(DataType.RTRAW, day, rtraw_path.name)
        for site in (tier0, grid.sites[INPUT_SITE]):
            storage.put_bytes(site.pfn(lfn), data)
        records.append(
            FileRecord(
                lfn=lfn,
                size=len(data),
                adler32=f"{zlib.adler32(data) & 0xFFFFFFFF:08x}",
                data_type=DataType.RTRAW,
                block_id=block_id_for(day),
                run_number=run,
                stream="Global",
                received_at=datetime.now(UTC),
            )
        )
    catalogue = grid.catalogue()
    try:
        catalogue.register_files(records, site=tier0.name, state=ReplicaState.VALIDATED)
        catalogue.set_replica_state([r.lfn for r in records], INPUT_SITE, ReplicaState.VALIDATED)
        catalogue.close_block(DataType.RTRAW, block_id_for(day))
    finally:
        catalogue.close()
    return sorted(r.lfn for r in records)


def _wait_all_runs_finished(grid: Grid, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        runs = grid.api.runs(DAG_ID)
        if runs and not [r for r in runs if r.get("state") in ("queued", "running")]:
            return {r["dag_run_id"]: r["state"] for r in runs}
        assert time.monotonic() < deadline, [(r["dag_run_id"], r["state"]) for r in runs]
        time.sleep(2)


def _rawflow(grid: Grid, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAWFLOW_VAR": str(grid.state.var_dir), "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "rawflow.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _view(grid: Grid, path: str, accept: str = "application/json") -> str:
    values = grid.state.values
    password = json.loads(Path(values["airflow_password_file"]).read_text())[values["airflow_user"]]
    base = str(values["airflow_url"]).rstrip("/")
    body = json.dumps({"username": values["airflow_user"], "password": password}).encode()
    login = urllib.request.Request(
        f"{base}/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(login, timeout=30) as resp:
        token = json.load(resp)["access_token"]
    request = urllib.request.Request(f"{base}{path}", headers={"Accept": accept, "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return str(resp.read().decode())


def test_campaign_dag_runs_a_block_on_dirac_replicates_and_reruns_nothing(grid: Grid) -> None:
    started = time.monotonic()
    inputs = _seed_rtraw_block(grid, DAY, FILES)
    outputs = {lfn: campaign_output_lfn(lfn, DataType.ESD, NAME) for lfn in inputs}

    # The DAG processor made the campaign's DAG from the steering file, paused: unpausing starts the campaign.
    _retry(lambda: grid.api.unpause(DAG_ID), what=f"{DAG_ID} parsed", timeout=150)
    run_id = grid.api.trigger(DAG_ID, logical_date=None)
    assert grid.api.wait_runs(DAG_ID, [run_id], timeout=240)[run_id] == "success"
    states = _wait_all_runs_finished(grid, timeout=120)
    assert set(states.values()) == {"success"}, states
    first_pass = time.monotonic() - started

    catalogue = grid.catalogue()
    store = JobStore(str(grid.state.values["catalogue_url"]))
    try:
        # One ESD per RTRAW, registered with lineage and the catalogued checksum, at both destinations.
        assert catalogue.children(inputs, DataType.ESD) == {lfn: [out] for lfn, out in outputs.items()}
        assert catalogue.parents(list(outputs.values())) == {out: [lfn] for lfn, out in outputs.items()}
        for out, replicas in catalogue.replica_states(list(outputs.values())).items():
            for site in DESTINATIONS:
                assert replicas[site].state is ReplicaState.VALIDATED, (out, site, replicas)
        # Every input once: one job each, done on its first attempt, on DIRAC.
        jobs = store.list_jobs(key_prefix=f"c.{NAME}.")
        assert sorted(j.inputs for j in jobs) == [(lfn,) for lfn in inputs]
        assert {(j.state, j.attempts, j.backend) for j in jobs} == {(JobPhase.DONE, 1, "dirac")}
    finally:
        store.close()
        catalogue.close()

    # The campaign's status, as the production manager sees it: CLI and the Rawflow view's API.
    cli = _rawflow(grid, "campaign", "status", NAME, "--json", "--catalogue", str(grid.state.values["catalogue_url"]))
    assert cli.returncode == 0, cli.stdout + cli.stderr
    (row,) = json.loads(cli.stdout)
    assert (row["status"], row["files"], row["processed"], row["processed_pct"]) == ("Done", FILES, FILES, 100.0)
    assert (row["outputs"], row["replicated"]) == (FILES, FILES)
    rows = json.loads(_view(grid, "/rawflow/api/campaigns"))
    (api_row,) = [r for r in rows if r.get("name") == NAME]
    assert (api_row["status"], api_row["processed_pct"], api_row["dag_id"]) == ("Done", 100.0, DAG_ID)
    assert api_row["pending"] == dict.fromkeys(DESTINATIONS, 0)
    page = _view(grid, f"/rawflow/campaigns?name={NAME}", accept="text/html")
    assert NAME in page and "100.0%" in page and f"{FILES} of {FILES} outputs there" in page

    # A second run of the finished campaign submits 0 jobs.
    again = grid.api.trigger(DAG_ID, logical_date=None)
    assert grid.api.wait_runs(DAG_ID, [again], timeout=180)[again] == "success"
    result = grid.api.xcom(DAG_ID, again, "process")
    assert result[BLOCK]["submitted"] == {}, result
    print(f"campaign: first run {first_pass:.0f}s, whole test {time.monotonic() - started:.0f}s")


def test_a_broken_steering_file_is_an_import_error_and_the_campaign_still_loads(grid: Grid) -> None:
    folder = Path(os.environ["RAWFLOW_CAMPAIGNS_DIR"])
    line = f"{folder / BROKEN}: backend='slurm': expected one of dirac, htcondor"
    listed: list[dict[str, object]] = []

    def recorded() -> None:
        errors = grid.api.request("GET", "/importErrors", limit=100)["import_errors"]
        (entry,) = [e for e in errors if e["filename"] == "rawflow_campaign_errors.py"]
        listed[:] = errors
        assert line in str(entry["stack_trace"]).splitlines(), entry

    _retry(recorded, what="the broken steering file in /importErrors", timeout=150)
    assert not [e for e in listed if e["filename"] == "rawflow_campaigns.py"], listed
    assert grid.api.request("GET", f"/dags/{DAG_ID}")["dag_id"] == DAG_ID
