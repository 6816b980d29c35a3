"""The HTCondor backend against a real local pool (Debian 13 chroot, minicondor 23.9.6, htcondor2 bindings)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rawflow.compute import get_compute_backend
from rawflow.compute.base import ComputeBackendError, JobHandle, JobSpec, JobState, stage_in, stage_out
from rawflow.compute.htcondor_backend import HTCondorBackend
from rawflow.grid.condor import (
    CondorPool,
    in_pool,
    kill_pool,
    pool_processes,
    start_pool,
    stop_pool,
    write_client_files,
)
from rawflow.grid.process import pid_alive
from rawflow.grid.xrootd import LocalSites
from tests.fixtures.condor import TEST_PAYLOADS, start_test_pool
from tests.integration.compute_contract import ComputeContract, wait_state, wait_terminal


@pytest.fixture(scope="module")
def backend(condor_pool: CondorPool) -> Iterator[HTCondorBackend]:
    backend = get_compute_backend("htcondor", condor_config=str(condor_pool.client_config_path), timeout=30)
    assert isinstance(backend, HTCondorBackend)
    yield backend
    backend.close()


class TestHTCondorContract(ComputeContract):
    def batch_unit(self, handle: JobHandle) -> str:
        return handle.backend_id.split(".")[0]  # the cluster


def test_a_client_configured_from_the_connection_alone(condor_pool: CondorPool, tmp_path: Path) -> None:
    """What an Airflow worker on another machine gets: the collector and the token."""
    token = "".join(p.read_text() for p in condor_pool.token_dir.glob("*.token"))
    config = write_client_files(tmp_path / "client", collector=condor_pool.collector, token=token)
    backend = HTCondorBackend(condor_config=str(config), timeout=30)
    key = f"conn-{uuid.uuid4().hex[:8]}"
    assert backend.submit([JobSpec(key=key, payload="echo")], batch=key)[0].new
    assert wait_terminal(backend, [key])[key].state is JobState.DONE
    backend.close()


def test_software_deployed_into_the_running_pool_is_used_by_later_jobs(
    backend: HTCondorBackend, condor_pool: CondorPool, tmp_path: Path
) -> None:
    key = uuid.uuid4().hex[:8]
    module = tmp_path / "marker.py"
    module.write_text(f"VALUE = {key!r}\n")
    condor_pool.deploy(extra={"rawflow/payloads": TEST_PAYLOADS, f"rawflow/marker_{key}.py": module})
    backend.submit([JobSpec(key=f"sw-{key}", payload="import", args=(f"marker_{key}",))], batch=f"sw-{key}")
    wait_terminal(backend, [f"sw-{key}"])
    assert backend.collect([f"sw-{key}"])[f"sw-{key}"].report["payload_report"]["value"] == key
    # Read-only for jobs, like CVMFS.
    backend.submit([JobSpec(key=f"ro-{key}", payload="write", args=("/opt/rawflow/sw/x",))], batch=f"ro-{key}")
    wait_terminal(backend, [f"ro-{key}"])
    assert backend.collect([f"ro-{key}"])[f"ro-{key}"].report["payload_report"]["error"] == "Read-only file system"


def test_jobs_run_as_the_pool_user_never_root(backend: HTCondorBackend) -> None:
    key = f"uid-{uuid.uuid4().hex[:8]}"
    backend.submit([JobSpec(key=key, payload="echo")], batch=key)
    wait_terminal(backend, [key])
    assert backend.collect([key])[key].report["payload_report"]["uid"] == 5001


def test_a_report_longer_than_one_chirp_line_comes_back_whole(backend: HTCondorBackend) -> None:
    """A DQM job over a run's files reports every input: far more than condor_chirp takes in one value (~5 KB)."""
    key = f"long-{uuid.uuid4().hex[:8]}"
    args = tuple(f"JUNO.{i:06d}.Physics.Global.di.rtraw" for i in range(300))
    backend.submit([JobSpec(key=key, payload="echo", args=args)], batch=key)
    assert wait_terminal(backend, [key])[key].state is JobState.DONE
    outcome = backend.collect([key])[key]
    assert outcome.report["payload_report"]["args"] == list(args)


def test_job_removed_behind_our_back_is_detected(backend: HTCondorBackend, condor_pool: CondorPool) -> None:
    key = f"rm-{uuid.uuid4().hex[:8]}"
    cluster = backend.submit([JobSpec(key=key, payload="sleep", args=("120",))], batch=key)[0].backend_id
    wait_state(backend, key, {JobState.QUEUED, JobState.RUNNING})
    in_pool(condor_pool, ["condor_rm", cluster])  # an operator, not rawflow
    assert wait_state(backend, key, {JobState.REMOVED, JobState.MISSING}).state is JobState.REMOVED
    # The key is free again: a resubmission makes a new job.
    assert backend.submit([JobSpec(key=key, payload="echo")], batch=f"{key}-2")[0].new


def test_input_staged_in_and_output_staged_out_over_xrootd(backend: HTCondorBackend, local_sites: LocalSites) -> None:
    prefix = local_sites.doors["IHEP-EOS"]["root"].rstrip("/")
    name = uuid.uuid4().hex[:8]
    data = bytes(range(256)) * 40  # 10240 bytes, 102 "events" for the copy payload
    src_local = Path(tempfile.mkdtemp()) / "in.dat"
    src_local.write_bytes(data)
    source, target = f"{prefix}/condor-test/{name}/RAW.dat", f"{prefix}/condor-test/{name}/out/RTRAW.root"
    subprocess.run(["xrdcp", "--nopbar", "--path", str(src_local), source], check=True, timeout=60)
    key = f"xrd-{name}"
    backend.submit([JobSpec(key=key, payload="copy", args=(stage_in(source), stage_out(target)))], batch=key)
    assert wait_terminal(backend, [key])[key].state is JobState.DONE
    report = backend.collect([key])[key].report
    adler = f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"
    assert report["outputs"] == [{"url": target, "size": len(data), "adler32": adler, "events": 102}]
    assert report["inputs"] == [{"url": source, "size": len(data)}]
    back = src_local.with_name("back.dat")
    subprocess.run(["xrdcp", "--nopbar", target, str(back)], check=True, timeout=60)
    assert back.read_bytes() == data
    shutil.rmtree(src_local.parent)


def test_stage_in_of_a_missing_file_fails_the_job_with_a_reason(
    backend: HTCondorBackend, local_sites: LocalSites
) -> None:
    prefix = local_sites.doors["IHEP-EOS"]["root"].rstrip("/")
    key = f"nofile-{uuid.uuid4().hex[:8]}"
    source = f"{prefix}/condor-test/absent/{key}.dat"
    backend.submit([JobSpec(key=key, payload="copy", args=(stage_in(source), stage_out(f"{source}.out")))], batch=key)
    outcome = backend.collect([wait_terminal(backend, [key]) and key])[key]
    assert outcome.state is JobState.FAILED and outcome.exit_code == 81
    assert f"stage-in of {source!r} failed" in outcome.stderr_tail


def test_held_job_shows_its_reason_and_runs_after_release(backend: HTCondorBackend, condor_pool: CondorPool) -> None:
    key = f"hold-{uuid.uuid4().hex[:8]}"
    job_id = backend.submit([JobSpec(key=key, payload="sleep", args=("1",))], batch=key)[0].backend_id
    in_pool(condor_pool, ["condor_hold", "-reason", "scratch disk full", job_id])
    held = wait_state(backend, key, {JobState.HELD})
    assert held.hold_reason is not None and "scratch disk full" in held.hold_reason
    assert key not in backend.collect([key])  # held is not terminal
    backend.release([key])
    assert wait_terminal(backend, [key])[key].state is JobState.DONE


@pytest.fixture(scope="module")
def real_pool(condor_root: Path) -> Iterator[CondorPool]:
    """A pool with the software area exactly as the grid deploys it: the real payloads."""
    state_dir = Path(tempfile.mkdtemp(prefix="rawflow-condor-real-"))
    try:
        yield start_pool(state_dir, num_cpus=2)
    finally:
        stop_pool(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


def test_real_raw2rtraw_job_stages_in_converts_and_stages_out(real_pool: CondorPool, local_sites: LocalSites) -> None:
    from rawflow.payloads.rawformat import synthesize

    prefix = local_sites.doors["IHEP-EOS"]["root"].rstrip("/") + f"/condor-real/{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp())
    raw, truth = synthesize(run=1234, stream="Physics", sequence=1, start_time_ns=1_790_000_000 * 10**9, size=64 * 1024)
    (work / "RAW.dat").write_bytes(raw)
    (work / "bad.dat").write_bytes(b"not a RAW file at all" * 100)
    for name in ("RAW.dat", "bad.dat"):
        subprocess.run(["xrdcp", "--nopbar", str(work / name), f"{prefix}/{name}"], check=True, timeout=60)
    backend = HTCondorBackend(condor_config=str(real_pool.client_config_path), timeout=30)
    good, bad = "real-good", "real-bad"
    backend.submit(
        [
            JobSpec(
                key=good, payload="raw2rtraw", args=(stage_in(f"{prefix}/RAW.dat"), stage_out(f"{prefix}/out.rtraw"))
            ),
            JobSpec(
                key=bad, payload="raw2rtraw", args=(stage_in(f"{prefix}/bad.dat"), stage_out(f"{prefix}/bad.rtraw"))
            ),
        ],
        batch="real",
    )
    wait_terminal(backend, [good, bad])
    outcomes = backend.collect([good, bad])
    done = outcomes[good]
    assert done.state is JobState.DONE, done.reason
    [output] = done.report["outputs"]
    assert output["events"] == len(truth.energy_mev) > 0
    subprocess.run(["xrdcp", "--nopbar", f"{prefix}/out.rtraw", str(work / "back.rtraw")], check=True, timeout=60)
    back = (work / "back.rtraw").read_bytes()
    assert (len(back), f"{zlib.adler32(back) & 0xFFFFFFFF:08x}") == (output["size"], output["adler32"])
    failed = outcomes[bad]
    assert failed.state is JobState.FAILED and failed.exit_code == 3  # malformed input: permanent
    assert "bad.dat" in failed.reason and "\n" not in failed.reason
    assert failed.report["outputs"] == []
    backend.close()
    shutil.rmtree(work)


def wait_until(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def own_pool(condor_root: Path) -> Iterator[CondorPool]:
    """A pool of its own, for drills that kill it."""
    state_dir = Path(tempfile.mkdtemp(prefix="rawflow-condor-drill-"))
    try:
        yield start_test_pool(state_dir, num_cpus=2)
    finally:
        stop_pool(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.mark.parametrize("crash", ["node", "master"])
def test_pool_killed_and_restarted_mid_run_finds_jobs_by_key(own_pool: CondorPool, crash: str) -> None:
    # A short lease: the restarted schedd gives up on the killed starters and requeues their jobs after it.
    backend = HTCondorBackend(condor_config=str(own_pool.client_config_path), timeout=15, job_lease_s=15)
    keys = [f"crash-{i}" for i in range(3)]
    jobs = [JobSpec(key=k, payload="sleep", args=("3",)) for k in keys]
    handles = backend.submit(jobs, batch="crash")
    wait_state(backend, keys[0], {JobState.RUNNING})
    if crash == "node":
        kill_pool(own_pool.state_dir)  # every daemon SIGKILLed: a crashed node
        assert pool_processes(own_pool.state_dir) == []
        with pytest.raises(ComputeBackendError):
            backend.poll(keys)
    else:
        os.kill(own_pool.pid, signal.SIGKILL)  # condor_master alone; its daemons outlive it until the restart
        wait_until(lambda: not pid_alive(own_pool.pid))
        assert pool_processes(own_pool.state_dir)
    restarted = start_test_pool(own_pool.state_dir, num_cpus=2)  # same state dir: same port, same queue
    assert restarted.port == own_pool.port
    again = backend.submit(jobs, batch="crash-retry")
    assert [h.new for h in again] == [False] * 3
    assert [h.backend_id for h in again] == [h.backend_id for h in handles]
    states = wait_terminal(backend, keys, timeout=120)
    assert {s.state for s in states.values()} == {JobState.DONE}
    assert [s.backend_id for s in states.values()] == [h.backend_id for h in handles]
    # Exactly one job per key ever existed.
    out = in_pool(restarted, ["condor_history", "-af", "RawflowKey"])
    assert sorted(out.split()) == keys
    backend.close()


def test_stopped_pool_leaves_no_process_and_no_mount(own_pool: CondorPool) -> None:
    assert pool_processes(own_pool.state_dir)
    backend = HTCondorBackend(condor_config=str(own_pool.client_config_path), timeout=15)
    backend.submit([JobSpec(key="busy", payload="sleep", args=("60",))], batch="busy")
    wait_state(backend, "busy", {JobState.RUNNING})
    assert stop_pool(own_pool.state_dir)
    assert pool_processes(own_pool.state_dir) == []
    mounts = Path("/proc/mounts").read_text()
    assert str(own_pool.root) not in mounts
    with pytest.raises(ComputeBackendError):
        backend.poll(["busy"])
    backend.close()
