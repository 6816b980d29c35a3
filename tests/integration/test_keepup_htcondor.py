"""Keep-up through its production path (run_keepup_round) on a real HTCondor pool and the xrootd Tier-0.

RAW files made by the payloads' own generator are written to the loopback Tier-0 and registered; the round
submits raw2rtraw, rec and dqm jobs in clusters, the jobs stage in and out over xrootd, and the outputs are
checked (size, adler32, events) and registered with lineage. One RAW file is malformed: its job fails,
is retried, and ends Problematic with the payload's reason while every other file is processed. An operator's
condor_hold and condor_rm (the bindings, from outside Rawflow) go through the same rounds: a held job is
released once, then removed and resubmitted; a removed job is resubmitted; each file gets one output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rawflow.catalogue.base import FileRecord
from rawflow.catalogue.sql import SqlCatalogue
from rawflow.compute import get_compute_backend
from rawflow.compute.base import ComputeBackendError, JobState
from rawflow.compute.htcondor_backend import COMPLETED, KEY_ATTR, REMOVED, HTCondorBackend, key_constraint
from rawflow.grid.condor import CondorPool, ensure_installed, in_pool, kill_pool, start_pool, stop_pool
from rawflow.grid.xrootd import LocalSites
from rawflow.naming import DataType, RawFileName, derived_lfn, lfn_for, parse_block_id
from rawflow.payloads.rawformat import read_header, synthesize
from rawflow.processing.jobs import JobStore
from rawflow.processing.keepup import KeepupContext, collect_round, run_keepup_round, submit_round
from rawflow.processing.planning import DQM, RAW2RTRAW, REC, JobPhase, RetryPolicy, attempt_key, job_key
from rawflow.storage.gfal2_storage import Gfal2Storage

pytestmark = pytest.mark.integration

BLOCK = "20261102"
RUN = 4321


@pytest.fixture(scope="module")
def pool() -> Iterator[CondorPool]:
    ensure_installed()
    state_dir = Path(tempfile.mkdtemp(prefix="rawflow-keepup-condor-"))
    pool = start_pool(state_dir, num_cpus=2)
    try:
        yield pool
    finally:
        stop_pool(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


@dataclass
class Setup:
    ctx: KeepupContext
    raws: list[FileRecord]
    events: dict[str, int]  # RAW LFN → events written
    bad: str


def _raw_file(
    storage: Gfal2Storage, ctx: KeepupContext, seq: int, tag: str, *, malformed: bool = False
) -> tuple[FileRecord, int]:
    day = parse_block_id(BLOCK)
    name = RawFileName.build(
        daq="JUNO",
        run_number=RUN,
        stream_type="Physics",
        stream_name="Global",
        file_tag=tag,
        file_time=datetime(day.year, day.month, day.day, 8, 0, seq),
        file_sequence=seq,
    ).name
    lfn = lfn_for(DataType.RAW, day, name)
    data, _truth = synthesize(run=RUN, stream="Global", sequence=seq, start_time_ns=seq * 10**9, size=30_000)
    events = read_header(data).event_count if not malformed else 0
    if malformed:
        data = data[: len(data) // 2]  # truncated mid-event: the payload must refuse it
    storage.put_bytes(ctx.url(lfn), data)
    record = FileRecord(
        lfn=lfn,
        size=len(data),
        adler32=f"{zlib.adler32(data) & 0xFFFFFFFF:08x}",
        data_type=DataType.RAW,
        block_id=BLOCK,
        run_number=RUN,
        stream="Global",
        received_at=datetime.now(UTC),
    )
    return record, events


@pytest.fixture(scope="module")
def setup(
    pool: CondorPool, local_sites: LocalSites, storage: Gfal2Storage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    db = f"sqlite:///{tmp_path_factory.mktemp('keepup')}/catalogue.db"
    catalogue = SqlCatalogue(db)
    backend = get_compute_backend("htcondor", condor_config=str(pool.client_config_path), timeout=30)
    ctx = KeepupContext(
        catalogue=catalogue,
        backend=backend,
        storage=storage,
        sites=local_sites.sites_config,
        jobs=JobStore(db),
        batch_size=3,  # several clusters per stage
        policy=RetryPolicy(max_failures=2, max_attempts=4, backoff=timedelta(0)),
    )
    tag = f"k{uuid.uuid4().hex[:6]}"
    made = [_raw_file(storage, ctx, seq, tag, malformed=(seq == 3)) for seq in range(1, 6)]
    catalogue.register_files([r for r, _ in made], site=ctx.sites.tier0.name)
    yield Setup(ctx=ctx, raws=[r for r, _ in made], events={r.lfn: n for r, n in made}, bad=made[2][0].lfn)
    backend.close()
    catalogue.close()


def test_keepup_round_processes_a_day_and_isolates_a_malformed_file(setup: Setup) -> None:
    ctx = setup.ctx
    report = run_keepup_round(ctx, BLOCK, timeout=timedelta(minutes=5), poll_interval=1.0)
    assert not report.timed_out, report.to_dict()
    good = [r for r in setup.raws if r.lfn != setup.bad]

    # Every good RAW file has exactly one RTRAW and one ESD, registered at the Tier-0 with lineage.
    children = ctx.catalogue.children([r.lfn for r in setup.raws], DataType.RTRAW)
    assert children == {r.lfn: [derived_lfn(r.lfn, DataType.RTRAW)] for r in good}
    rtraws = [derived_lfn(r.lfn, DataType.RTRAW) for r in good]
    esds = ctx.catalogue.children(rtraws, DataType.ESD)
    assert esds == {lfn: [derived_lfn(lfn, DataType.ESD)] for lfn in rtraws}
    assert ctx.catalogue.parents([derived_lfn(rtraws[0], DataType.ESD)]) == {
        derived_lfn(rtraws[0], DataType.ESD): [rtraws[0]]
    }
    assert ctx.catalogue.files_without_children(DataType.RAW, BLOCK, DataType.RTRAW)[0].lfn == setup.bad
    for lfn in rtraws:
        record = ctx.catalogue.get_file(lfn)
        assert record is not None and record.run_number == RUN and record.block_id == BLOCK
        assert ctx.storage.checksum(ctx.url(lfn)) == record.adler32  # what is catalogued is what is there

    # Event counts: RTRAW and ESD carry every event of their RAW file.
    jobs = {(j.payload, j.inputs[0]): j for j in ctx.jobs.list_jobs(block_id=BLOCK)}
    for raw in good:
        rtraw = derived_lfn(raw.lfn, DataType.RTRAW)
        assert jobs[RAW2RTRAW, raw.lfn].state is JobPhase.DONE
        assert jobs[RAW2RTRAW, raw.lfn].events == setup.events[raw.lfn] > 0
        assert jobs[REC, rtraw].events == setup.events[raw.lfn]
        assert jobs[RAW2RTRAW, raw.lfn].backend_id and "." in str(jobs[RAW2RTRAW, raw.lfn].backend_id)

    # The malformed file: failed, retried once, Problematic with the payload's one-line reason.
    bad = jobs[RAW2RTRAW, setup.bad]
    assert bad.state is JobPhase.PROBLEMATIC
    assert bad.failures == 2 and bad.attempts == 2
    assert bad.exit_code == 3
    assert "failed 2 times" in (bad.reason or "") and "raw2rtraw:" in (bad.reason or "")
    assert Path(setup.bad).name in (bad.reason or "")

    # DQM of the run over the converted files, with the charge spectrum for the view.
    dqm = [j for j in ctx.jobs.list_jobs(block_id=BLOCK, payload=DQM) if j.state is JobPhase.DONE]
    assert len(dqm) == 1 and dqm[0].summary is not None
    assert dqm[0].summary["events"] == sum(setup.events[r.lfn] for r in good)
    assert sum(dqm[0].summary["charge_spectrum"]["counts"]) > 0

    # Re-running over the processed day submits nothing.
    again = run_keepup_round(ctx, BLOCK, timeout=timedelta(minutes=1), poll_interval=1.0)
    assert again.total_submitted == 0 and again.registered == {}


def test_resubmission_after_a_crash_finds_the_job_by_key(setup: Setup, storage: Gfal2Storage) -> None:
    ctx = setup.ctx
    raw, _events = _raw_file(storage, ctx, 9, f"c{uuid.uuid4().hex[:6]}")
    ctx.catalogue.register_files([raw], site=ctx.sites.tier0.name)
    first = submit_round(ctx, BLOCK)
    assert first.submitted == {RAW2RTRAW: 1}
    record = next(j for j in ctx.jobs.active(BLOCK) if j.inputs == (raw.lfn,))
    # A crash after the backend accepted the job but before the handle was recorded.
    ctx.jobs.upsert([record.evolve(state=JobPhase.SUBMITTING, backend_id=None)])
    submit_round(ctx, BLOCK)
    again = ctx.jobs.get([record.key])[record.key]
    assert again.backend_id == record.backend_id  # the same HTCondor job, not a second one
    assert again.attempts == record.attempts == 1
    report = run_keepup_round(ctx, BLOCK, timeout=timedelta(minutes=4), poll_interval=1.0)
    assert not report.timed_out
    assert ctx.catalogue.children([raw.lfn]) == {raw.lfn: [derived_lfn(raw.lfn, DataType.RTRAW)]}


def _operator(pool: CondorPool, action: str, backend_key: str, reason: str) -> int:
    """condor_hold / condor_rm of one attempt's job from outside Rawflow, with the bindings as an operator's
    script would: the number of jobs the schedd changed."""
    import htcondor2

    os.environ["CONDOR_CONFIG"] = str(pool.client_config_path)
    htcondor2.reload_config()
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    result = schedd.act(getattr(htcondor2.JobAction, action), key_constraint([backend_key]), reason=reason)
    return int(result["TotalSuccess"])


def _schedd_jobs(pool: CondorPool, keys: list[str]) -> dict[str, list[int]]:
    """Per attempt key the JobStatus of every HTCondor job carrying it, queue and history together: the
    schedd's own record, without the backend's "latest job per key" reduction."""
    import htcondor2

    os.environ["CONDOR_CONFIG"] = str(pool.client_config_path)
    htcondor2.reload_config()
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    constraint, projection = key_constraint(keys), [KEY_ATTR, "JobStatus"]
    ads = list(schedd.query(constraint=constraint, projection=projection))
    ads += list(schedd.history(constraint, projection, match=-1))
    jobs: dict[str, list[int]] = {}
    for ad in ads:
        jobs.setdefault(str(ad[KEY_ATTR]), []).append(int(ad["JobStatus"]))
    return {key: sorted(states) for key, states in jobs.items()}


def _one_output_each(ctx: KeepupContext, raw: FileRecord) -> None:
    """The file ends processed: one RTRAW registered for it, and one ESD for that, each by one job row."""
    rtraw = derived_lfn(raw.lfn, DataType.RTRAW)
    assert ctx.catalogue.children([raw.lfn]) == {raw.lfn: [rtraw]}
    assert ctx.catalogue.children([rtraw]) == {rtraw: [derived_lfn(rtraw, DataType.ESD)]}
    assert ctx.catalogue.query_files(Block=BLOCK, Type="RTRAW").count(rtraw) == 1
    rows = [j for j in ctx.jobs.list_jobs(block_id=BLOCK) if j.inputs in ((raw.lfn,), (rtraw,))]
    assert sorted((j.payload, j.state) for j in rows) == [(RAW2RTRAW, JobPhase.DONE), (REC, JobPhase.DONE)]


def test_held_job_is_released_once_then_removed_and_resubmitted(
    setup: Setup, storage: Gfal2Storage, pool: CondorPool
) -> None:
    ctx = setup.ctx
    raw, _events = _raw_file(storage, ctx, 30, f"h{uuid.uuid4().hex[:6]}")
    ctx.catalogue.register_files([raw], site=ctx.sites.tier0.name)
    key = job_key(RAW2RTRAW, [raw.lfn])
    first, second = attempt_key(key, 1), attempt_key(key, 2)
    submit_round(ctx, BLOCK)
    assert ctx.jobs.get([key])[key].backend_key == first

    # The operator holds the job (idle or already running): the next round releases it, once.
    assert _operator(pool, "Hold", first, "operator hold 1") == 1
    report = collect_round(ctx, BLOCK)
    record = ctx.jobs.get([key])[key]
    assert report.released >= 1 and report.resubmitted == 0
    assert (record.state, record.released, record.attempts) == (JobPhase.HELD, True, 1)
    # The bindings' hold leaves HoldReason empty; the round records what HoldReasonCode says instead.
    assert record.hold_reason == "by a user or an administrator (condor_hold, HoldReasonCode 1)"
    assert ctx.backend.poll([first])[first].state in (JobState.QUEUED, JobState.RUNNING)  # released, not held

    # Held again: no second release; the round removes it and submits a new attempt (a new key).
    assert _operator(pool, "Hold", first, "operator hold 2") == 1
    report = collect_round(ctx, BLOCK)
    record = ctx.jobs.get([key])[key]
    assert report.resubmitted >= 1
    assert (record.released, record.attempts, record.failures, record.backend_key) == (False, 2, 0, second)
    assert record.reason == "held: by a user or an administrator (condor_hold, HoldReasonCode 1)"
    assert ctx.backend.poll([first])[first].state is JobState.REMOVED

    report = run_keepup_round(ctx, BLOCK, timeout=timedelta(minutes=4), poll_interval=1.0)
    assert not report.timed_out, report.to_dict()
    _one_output_each(ctx, raw)
    record = ctx.jobs.get([key])[key]
    assert (record.state, record.attempts, record.failures) == (JobPhase.DONE, 2, 0)
    # HTCondor ran one job per attempt key: the held one removed, its replacement completed.
    assert _schedd_jobs(pool, [first, second]) == {first: [REMOVED], second: [COMPLETED]}


def test_job_removed_behind_keepups_back_is_resubmitted(setup: Setup, storage: Gfal2Storage, pool: CondorPool) -> None:
    ctx = setup.ctx
    raw, _events = _raw_file(storage, ctx, 31, f"r{uuid.uuid4().hex[:6]}")
    ctx.catalogue.register_files([raw], site=ctx.sites.tier0.name)
    key = job_key(RAW2RTRAW, [raw.lfn])
    first, second = attempt_key(key, 1), attempt_key(key, 2)
    submit_round(ctx, BLOCK)
    assert ctx.jobs.get([key])[key].backend_key == first

    # condor_rm by an operator: the next round sees the job gone and submits a new attempt.
    assert _operator(pool, "Remove", first, "operator condor_rm") == 1
    report = collect_round(ctx, BLOCK)
    record = ctx.jobs.get([key])[key]
    assert report.resubmitted >= 1
    assert (record.attempts, record.failures, record.backend_key) == (2, 0, second)
    assert record.state in (JobPhase.QUEUED, JobPhase.RUNNING)
    assert record.reason == "the job was removed from the batch system, not by Rawflow"

    report = run_keepup_round(ctx, BLOCK, timeout=timedelta(minutes=4), poll_interval=1.0)
    assert not report.timed_out, report.to_dict()
    _one_output_each(ctx, raw)
    record = ctx.jobs.get([key])[key]
    assert (record.state, record.attempts, record.failures) == (JobPhase.DONE, 2, 0)
    assert _schedd_jobs(pool, [first, second]) == {first: [REMOVED], second: [COMPLETED]}


def test_pool_killed_mid_round_completes_with_one_job_per_key(
    setup: Setup, storage: Gfal2Storage, pool: CondorPool
) -> None:
    # A short job lease: the restarted schedd requeues the killed starters' jobs soon.
    backend = HTCondorBackend(condor_config=str(pool.client_config_path), timeout=15, job_lease_s=15)
    ctx = replace(setup.ctx, backend=backend)
    tag = f"x{uuid.uuid4().hex[:6]}"
    raws = [_raw_file(storage, ctx, seq, tag)[0] for seq in (20, 21, 22, 23)]
    ctx.catalogue.register_files(raws, site=ctx.sites.tier0.name)
    assert submit_round(ctx, BLOCK).submitted.get(RAW2RTRAW) == 4
    records = {r.inputs[0]: r for r in ctx.jobs.active(BLOCK) if r.inputs[0] in {raw.lfn for raw in raws}}
    deadline = time.monotonic() + 60
    while not any(
        s.state is JobState.RUNNING for s in backend.poll([r.backend_key for r in records.values()]).values()
    ):
        assert time.monotonic() < deadline, "no job started"
        time.sleep(0.5)
    kill_pool(pool.state_dir)  # every HTCondor daemon SIGKILLed mid-run (condor_master included)
    with pytest.raises(ComputeBackendError):
        collect_round(ctx, BLOCK)
    start_pool(pool.state_dir, num_cpus=2)  # same state dir: same port, same queue
    report = run_keepup_round(ctx, BLOCK, timeout=timedelta(minutes=5), poll_interval=1.0)
    assert not report.timed_out, report.to_dict()
    for raw in raws:
        rtraw = derived_lfn(raw.lfn, DataType.RTRAW)
        assert ctx.catalogue.children([raw.lfn]) == {raw.lfn: [rtraw]}
        assert ctx.catalogue.children([rtraw]) == {rtraw: [derived_lfn(rtraw, DataType.ESD)]}
    # No attempt key ever had two HTCondor jobs (queue and history together).
    keys = (
        in_pool(pool, ["condor_history", "-af", "RawflowKey"]) + in_pool(pool, ["condor_q", "-af", "RawflowKey"])
    ).split()
    for record in records.values():
        ours = [k for k in keys if k.startswith(record.key + ".")]
        assert ours and len(ours) == len(set(ours)), ours
    backend.close()
