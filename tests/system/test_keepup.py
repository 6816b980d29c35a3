"""Keep-up on the whole local grid: announced RAW files → receiver → block Asset event → rawflow_keepup (on a
real HTCondor pool) → RTRAW and ESD registered once with lineage → rawflow_block_rtraw replicates RTRAW. One
RAW file of the day is damaged (announced consistently, truncated): its job fails, is retried and ends
Problematic with the payload's reason while every other file is processed.

Airflow runs as `airflow standalone` (rawflow.grid.stack.up, as `make demo` does), driven through its REST
API; the grid's pool is reached through its ``rawflow_compute`` Connection, as in production.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rawflow import demo
from rawflow.catalogue.base import ReplicaState
from rawflow.compute.base import JobState
from rawflow.compute.htcondor_backend import KEY_ATTR, HTCondorBackend, key_constraint
from rawflow.errors import PermanentError
from rawflow.grid import stack
from rawflow.naming import DataType, block_id_for, derived_lfn
from rawflow.processing.jobs import JobStore
from rawflow.processing.planning import RAW2RTRAW, REC, JobPhase, job_key
from tests.system.test_block_flow import Grid, _processes_of, _retry, _wait

FILES = 6  # good RAW files of the first test's day; one damaged file is announced among them
DAMAGED_DAYS_AGO = 2  # the first test's day, which holds the damaged file
MAX_FAILURES = 3  # rawflow_keepup_max_failures (default)
KEEPUP = "rawflow_keepup"
RAW_DAG = "rawflow_block_raw"
RTRAW_DAG = "rawflow_block_rtraw"
ESD_DAG = "rawflow_block_esd"


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    var = tmp_path_factory.mktemp("grid")
    os.environ.setdefault("GFAL_PYTHONBIN", "/usr/bin/python3")
    # Airflow and the catalogue on Postgres, as in production (see test_block_flow): on SQLite, the burst of
    # first runs at start-up timed the API server out (ReadTimeout) on 2 loaded cores in one CI run.
    state = stack.up(
        var,
        api_port=None,
        postgres=os.environ.get("RAWFLOW_TEST_PG_URL") or "private",
        progress=lambda line: print("grid:", line),
    )
    try:
        os.environ["X509_CERT_DIR"] = str(state.values["x509_cert_dir"])
        g = Grid(state)
        assert state.values["condor_config"], "the grid started no HTCondor pool"
        g.api.set_variable("rawflow_keepup_backoff_seconds", "1")
        # A derived block held open (parent still open, keep-up still owes files) is asked again this often.
        g.api.set_variable("rawflow_derived_close_recheck_seconds", "2")
        for dag_id in ("rawflow_receiver", KEEPUP, RAW_DAG, RTRAW_DAG, ESD_DAG):
            _retry(lambda dag_id=dag_id: g.api.unpause(dag_id), what=f"{dag_id} parsed")
        yield g
    finally:
        stack.purge(var, keep_state=True, progress=lambda line: print("grid:", line))  # logs kept, site data not


def _asset_run_made_or_queued(grid: Grid) -> bool:
    if any(r.get("run_type") == "asset_triggered" for r in grid.api.runs(KEEPUP)):
        return True
    try:
        queued = grid.api.request("GET", f"/dags/{KEEPUP}/assets/queuedEvents")
    except PermanentError:  # 404: nothing queued for the DAG
        return False
    return bool(queued and queued.get("total_entries"))


def _damaged_block() -> str:
    return block_id_for(datetime.now(UTC).date() - timedelta(days=DAMAGED_DAYS_AGO))


def _assert_completed_but_for_the_damaged_day(grid: Grid, run_id: str) -> dict[str, str]:
    """A finished keep-up run succeeded with every task, except that the run during which the damaged file's job
    became Problematic fails its raw2rtraw task, at once (no task retry), while rec and dqm still run (the
    run's state follows its last task, dqm: success); later runs over that day only warn. Returns task → state."""
    [run] = [r for r in grid.api.runs(KEEPUP) if r["dag_run_id"] == run_id]
    tis = {ti["task_id"]: (ti["state"], ti["try_number"]) for ti in grid.api.task_instances(KEEPUP, run_id)}
    expected = dict.fromkeys(("blocks", "raw2rtraw", "rec", "dqm"), "success")
    if tis.get("raw2rtraw", ("", 0))[0] == "failed":
        assert tis["raw2rtraw"][1] == 1, (run_id, tis)
        assert _damaged_block() in grid.api.xcom(KEEPUP, run_id, "blocks"), run_id
        expected["raw2rtraw"] = "failed"
    states = {task: state for task, (state, _) in tis.items()}
    assert (run["state"], states) == ("success", expected), (run_id, run["state"], tis)
    return states


def test_announced_day_is_converted_reconstructed_registered_and_replicated(grid: Grid) -> None:
    day = datetime.now(UTC).date() - timedelta(days=DAMAGED_DAYS_AGO)
    block_id = block_id_for(day)
    files = grid.announce(day, count=FILES + 1, sizes=(16 * 1024, 64 * 1024), damaged=(FILES // 2,))
    bad = files[FILES // 2][0]
    raws = sorted(lfn for lfn, _ in files if lfn != bad)
    grid.wait_registered(day, FILES + 1)  # the damaged file is consistent: registered like the others

    # The receiver's block Asset event (or the periodic catch-up) starts keep-up: no manual trigger. The damaged
    # file's job fails, is retried (backoff 1 s) and ends Problematic; the others get RTRAW and ESD meanwhile.
    deadline = time.monotonic() + 240
    catalogue = grid.catalogue()
    store = JobStore(str(grid.state.values["catalogue_url"]))
    bad_key = job_key(RAW2RTRAW, [bad])
    try:
        while True:
            missing = catalogue.files_without_children(DataType.RTRAW, block_id, DataType.ESD)
            rtraw = catalogue.query_files(Block=block_id, Type="RTRAW")
            bad_job = store.get([bad_key]).get(bad_key)
            gave_up = bad_job is not None and bad_job.state is JobPhase.PROBLEMATIC
            if len(rtraw) == FILES and not missing and gave_up:
                break
            assert time.monotonic() < deadline, (
                f"keep-up: {len(rtraw)}/{FILES} RTRAW, {len(missing)} without ESD, damaged file's job: {bad_job}"
            )
            time.sleep(2)
        # The registrations' Asset events make a run of their own. With max_active_runs=1 the scheduler
        # creates it only when no run is active: it may wait behind the periodic catch-up run (which can be
        # the one that did the work) and the next half-hour tick (seen in CI: 09:00 and 09:30 ran first).
        # Until then the events sit in the DAG's asset queue, which says the same thing.
        deadline = time.monotonic() + 300
        while not _asset_run_made_or_queued(grid):
            assert time.monotonic() < deadline, grid.api.runs(KEEPUP)
            time.sleep(2)

        # The damaged file: failed, retried, Problematic with the payload's one-line reason; nothing derived.
        assert bad_job is not None
        assert (bad_job.failures, bad_job.attempts, bad_job.exit_code) == (MAX_FAILURES, MAX_FAILURES, 3), bad_job
        assert (bad_job.reason or "").startswith(f"failed {MAX_FAILURES} times, last: exit code 3: "), bad_job.reason
        assert f"raw2rtraw: {Path(bad).name}: truncated" in (bad_job.reason or ""), bad_job.reason
        # Lineage both ways, one output per good input, metadata from the RAW file.
        assert catalogue.children([*raws, bad], DataType.RTRAW) == {
            lfn: [derived_lfn(lfn, DataType.RTRAW)] for lfn in raws
        }
        rtraws = [derived_lfn(lfn, DataType.RTRAW) for lfn in raws]
        esds = [derived_lfn(lfn, DataType.ESD) for lfn in rtraws]
        assert catalogue.parents(esds) == {esd: [rt] for esd, rt in zip(esds, rtraws, strict=True)}
        assert catalogue.query_files(Block=block_id, Type="ESD") == sorted(esds)
        raw_records = catalogue.get_files(raws)
        for lfn, record in catalogue.get_files(rtraws).items():
            parent = raw_records[lfn.replace("/rtraw/", "/raw/").replace(".rtraw", ".dat")]
            assert (record.run_number, record.stream, record.block_id) == (
                parent.run_number,
                parent.stream,
                block_id,
            )

        # Event counts equal the RAW's, every good file's job done once (no key submitted twice).
        jobs = store.list_jobs(block_id=block_id)
        by_input = {(j.payload, j.inputs[0]): j for j in jobs if j.payload in (RAW2RTRAW, REC)}
        assert len(by_input) == 2 * FILES + 1 and by_input[RAW2RTRAW, bad].key == bad_key
        for raw, rt in zip(raws, rtraws, strict=True):
            convert, reconstruct = by_input[RAW2RTRAW, raw], by_input[REC, rt]
            assert convert.state is JobPhase.DONE and reconstruct.state is JobPhase.DONE
            assert convert.attempts == 1 and convert.events and convert.events == reconstruct.events

        # The day's RAW, RTRAW and ESD blocks replicate at once, each through its block DAG by its own policy.
        # A derived block closes only after its parent (RAW → RTRAW → ESD) once keep-up owes it nothing.
        started = time.monotonic()
        backfills = {
            dag_id: grid.api.backfill(dag_id, f"{day}T00:00:00Z", f"{day}T00:00:00Z")["id"]
            for dag_id in (RAW_DAG, RTRAW_DAG, ESD_DAG)
        }
        for backfill_id in backfills.values():
            grid.api.wait_backfill(backfill_id, timeout=300)
        print(f"RAW + RTRAW + ESD block DAGs of the day: {time.monotonic() - started:.0f}s")
        runs = {dag_id: [r for r in grid.api.runs(dag_id) if r.get("run_type") == "backfill"] for dag_id in backfills}
        assert {dag_id: [r["state"] for r in found] for dag_id, found in runs.items()} == {
            dag_id: ["success"] for dag_id in backfills
        }
        # What `make demo` waits for and prints, here over the day the block DAGs just finished.
        for kind, count in ((DataType.RAW, FILES + 1), (DataType.RTRAW, FILES), (DataType.ESD, FILES)):
            assert demo.wait_processed(grid.state, block_id, 30, kind, expected=count), kind
        blocks = {kind: catalogue.get_block(kind, block_id) for kind in (DataType.RAW, DataType.RTRAW, DataType.ESD)}
        closed_at = {kind: block.closed_at for kind, block in blocks.items() if block is not None}
        assert len(closed_at) == 3 and all(closed_at.values()), blocks
        assert closed_at[DataType.RAW] <= closed_at[DataType.RTRAW] <= closed_at[DataType.ESD], closed_at

        # RTRAW flows through the existing block replication and is validated at its sites.
        summary = catalogue.block_summary(DataType.RTRAW, block_id)
        for site in grid.sites.destinations:
            expected = sum(site.keeps(lfn) for lfn in rtraws)
            assert summary.get(site.name, {}) == ({ReplicaState.VALIDATED: expected} if expected else {}), summary
        assert summary[grid.sites.archive.name] == {ReplicaState.ARCHIVED: FILES}

        # ESD by its policy: every file at CNAF-STORM, IN2P3-DCACHE its half, nothing at JINR or on tape.
        esd_policy = grid.sites.for_type(DataType.ESD)
        in2p3 = esd_policy["IN2P3-DCACHE"]
        at_in2p3 = sum(in2p3.keeps(lfn) for lfn in esds)
        summary = catalogue.block_summary(DataType.ESD, block_id)
        expected_esd = {grid.sites.tier0.name: {ReplicaState.VALIDATED: FILES}}
        expected_esd["CNAF-STORM"] = {ReplicaState.VALIDATED: FILES}
        if at_in2p3:
            expected_esd["IN2P3-DCACHE"] = {ReplicaState.VALIDATED: at_in2p3}
        assert summary == expected_esd, summary
        assert "IHEP-TAPE" not in summary and "JINR-EOS" not in summary
        # The block report and the view's matrix show the ESD block's real targets only.
        report = grid.api.xcom(ESD_DAG, runs[ESD_DAG][0]["dag_run_id"], "report")
        assert list(report["sites"]) == ["CNAF-STORM", "IN2P3-DCACHE"], report
        assert report["closed"] and report["sites"]["CNAF-STORM"]["processed"] == FILES, report
        assert report["sites"]["IN2P3-DCACHE"]["assigned"] == at_in2p3, report
        assert report["missing_from_keepup"] == {"count": 0, "files": {}}, report
        token = grid.api._login()
        request = urllib.request.Request(f"{grid.api.url}/rawflow/api/matrix?days=5&type=ESD")
        request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=30) as resp:
            rows = {row["block"]: row for row in json.load(resp)["rows"]}
        row = rows[f"ESD-{block_id}"]
        assert sorted(row["sites"]) == ["CNAF-STORM", "IN2P3-DCACHE"], row
        assert row["status"] == "Processed", row

        # Re-running the keep-up over the processed day submits nothing and stays green: the file became
        # Problematic in an earlier run (which failed its raw2rtraw), so this one only warns; rec and dqm find
        # nothing to do; the jobs table is unchanged.
        before = {(j.key, j.state, j.attempts) for j in store.list_jobs(block_id=block_id)}
        run_id = grid.api.trigger(KEEPUP, logical_date=None, conf={"blocks": [block_id]})
        grid.api.wait_runs(KEEPUP, [run_id], timeout=180)
        assert _assert_completed_but_for_the_damaged_day(grid, run_id)["raw2rtraw"] == "success"
        for task_id in ("rec", "dqm"):
            result = grid.api.xcom(KEEPUP, run_id, task_id)
            assert result[block_id]["submitted"] == {}, (task_id, result)
        assert {(j.key, j.state, j.attempts) for j in store.list_jobs(block_id=block_id)} == before
    finally:
        store.close()
        catalogue.close()


# Files of 256-512 KiB (the first test's are 16-64 KiB) keep the jobs running long enough to be caught; 12 of
# them make the run's DQM report longer than one condor_chirp value (recorded in parts since).
DRILL_FILES = 12


def _condor_jobs_per_key(condor_config: str, keys: list[str]) -> dict[str, set[str]]:
    """Per attempt key every HTCondor job (cluster.proc) carrying it, in the queue or the history: the
    schedd's own record, read without the backend's "latest job per key" reduction."""
    import htcondor2

    os.environ["CONDOR_CONFIG"] = condor_config
    htcondor2.reload_config()
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    constraint = key_constraint(keys)
    projection = [KEY_ATTR, "ClusterId", "ProcId"]
    ads = list(schedd.query(constraint=constraint, projection=projection))
    ads += list(schedd.history(constraint, projection, match=-1))
    jobs: dict[str, set[str]] = {}
    for ad in ads:
        jobs.setdefault(str(ad[KEY_ATTR]), set()).add(f"{ad['ClusterId']}.{ad['ProcId']}")
    return jobs


def test_triggerer_killed_while_keepup_jobs_run_run_completes_nothing_submitted_twice(grid: Grid) -> None:
    day = datetime.now(UTC).date() - timedelta(days=3)
    block_id = block_id_for(day)
    home = str(grid.state.values["airflow_home"])
    condor_config = str(grid.state.values["condor_config"])
    files = grid.announce(day, count=DRILL_FILES, sizes=(256 * 1024, 512 * 1024))
    raws = sorted(lfn for lfn, _ in files)
    grid.wait_registered(day, DRILL_FILES)

    # Wait for a keep-up stage deferred on ComputeJobsTrigger while HTCondor still runs (or queues) its jobs.
    store = JobStore(str(grid.state.values["catalogue_url"]))
    backend = HTCondorBackend(condor_config=condor_config, timeout=30)
    caught: dict[str, str] = {}
    try:

        def deferred_with_jobs_running() -> bool:
            for run in grid.api.runs(KEEPUP):
                if run.get("state") != "running":
                    continue
                deferred = [
                    ti["task_id"]
                    for ti in grid.api.task_instances(KEEPUP, run["dag_run_id"])
                    if ti["state"] == "deferred" and ti["task_id"] in ("raw2rtraw", "rec")
                ]
                keys = [j.backend_key for j in store.list_jobs(block_id=block_id) if j.state.active]
                live = {
                    k: s.state for k, s in backend.poll(keys).items() if s.state in (JobState.QUEUED, JobState.RUNNING)
                }
                if deferred and JobState.RUNNING in live.values():
                    caught.update(run_id=run["dag_run_id"], task_id=deferred[0], unfinished=str(len(live)))
                    return True
            return False

        _wait(deferred_with_jobs_running, "a keep-up stage deferred while its HTCondor jobs run", timeout=240)
        triggerers = _processes_of(home, "airflow triggerer")
        assert triggerers, "the standalone triggerer process was not found"
        for pid in triggerers:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        grid.state.start_triggerer()
        print(
            f"drill: killed triggerer {triggerers} with {caught['task_id']} deferred, {caught['unfinished']} jobs unfinished"
        )

        # The replacement triggerer takes the wait over: the run completes without the dead one.
        run_id = caught["run_id"]
        grid.api.wait_runs(KEEPUP, [run_id], timeout=360)
        _assert_completed_but_for_the_damaged_day(grid, run_id)
        print(f"drill: run {run_id} completed {time.monotonic() - killed_at:.0f}s after the kill")
        # Runs queued behind it (later registrations' Asset events) finish too, with nothing to do.
        deadline = time.monotonic() + 180
        while pending := [r for r in grid.api.runs(KEEPUP) if r.get("state") in ("queued", "running")]:
            assert time.monotonic() < deadline, pending
            time.sleep(2)
        for run in grid.api.runs(KEEPUP):
            _assert_completed_but_for_the_damaged_day(grid, run["dag_run_id"])

        # Every RAW file has exactly one RTRAW child, and it exactly one ESD child; each registered once.
        rtraws = [derived_lfn(lfn, DataType.RTRAW) for lfn in raws]
        esds = [derived_lfn(lfn, DataType.ESD) for lfn in rtraws]
        catalogue = grid.catalogue()
        try:
            assert catalogue.children(raws, DataType.RTRAW) == {lfn: [rt] for lfn, rt in zip(raws, rtraws, strict=True)}
            assert catalogue.children(rtraws, DataType.ESD) == {rt: [e] for rt, e in zip(rtraws, esds, strict=True)}
            assert catalogue.query_files(Block=block_id, Type="RTRAW") == sorted(rtraws)
            assert catalogue.query_files(Block=block_id, Type="ESD") == sorted(esds)
        finally:
            catalogue.close()

        # One job row per (payload, input), each done on its first attempt, and HTCondor ran exactly one job
        # per attempt key: the takeover resubmitted nothing.
        jobs = [j for j in store.list_jobs(block_id=block_id) if j.payload in (RAW2RTRAW, REC)]
        assert sorted((j.payload, j.inputs[0]) for j in jobs) == sorted(
            [(RAW2RTRAW, lfn) for lfn in raws] + [(REC, rt) for rt in rtraws]
        )
        assert {(j.state, j.attempts) for j in jobs} == {(JobPhase.DONE, 1)}, [
            (j.key, j.state, j.attempts) for j in jobs
        ]
        outputs = [out for j in jobs for out in j.outputs]
        assert sorted(outputs) == sorted(rtraws + esds)
        all_keys = [j.backend_key for j in store.list_jobs(block_id=block_id)]
        per_key = _condor_jobs_per_key(condor_config, all_keys)
        assert {k: len(v) for k, v in per_key.items()} == dict.fromkeys(all_keys, 1), per_key
    finally:
        backend.close()
        store.close()
