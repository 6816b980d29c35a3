"""A re-reconstruction campaign (RTRAW → ESD) over 3 days, through its production path (the keep-up round
machinery with the campaign's planner), on DIRAC's local execution (real DIRAC client) and on the HTCondor
pool, against the xrootd Tier-0 and a catalogue: every input processed once, ESD registered with lineage,
a day not yet complete at the input site waits, a re-run submits 0 jobs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from rawflow.catalogue.base import FileRecord, ReplicaState
from rawflow.catalogue.sql import SqlCatalogue
from rawflow.compute import get_compute_backend
from rawflow.compute.base import ComputeBackend
from rawflow.grid.condor import CondorPool, ensure_installed, start_pool, stop_pool
from rawflow.grid.xrootd import LocalSites
from rawflow.naming import DataType, RawFileName, lfn_for
from rawflow.payloads.rawformat import synthesize
from rawflow.processing.campaign_round import campaign_output_lfn, campaign_status, run_campaign
from rawflow.processing.campaigns import load_campaign, parse_campaign
from rawflow.processing.jobs import JobStore
from rawflow.processing.keepup import KeepupContext
from rawflow.processing.planning import RetryPolicy
from rawflow.storage.gfal2_storage import Gfal2Storage
from rawflow.transfer.engine import StorageSpec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DIRAC_PYTHON = ROOT / ".venv-dirac" / "bin" / "python"
DAYS = [date(2026, 11, 21), date(2026, 11, 22), date(2026, 11, 23)]
FILES_PER_DAY = 2
INPUT_SITE = "CNAF-STORM"


@dataclass
class Grid:
    catalogue: SqlCatalogue
    jobs: JobStore
    storage: Gfal2Storage
    sites: LocalSites
    rtraws: dict[str, list[str]]  # block → RTRAW LFNs


def _rtraw(
    storage: Gfal2Storage, sites: LocalSites, day: date, seq: int, tag: str, work: Path, *, malformed: bool = False
) -> FileRecord:
    name = RawFileName.build(
        daq="JUNO",
        run_number=5000 + day.day,
        stream_type="Physics",
        stream_name="Global",
        file_tag=tag,
        file_time=datetime(day.year, day.month, day.day, 9, 0, seq),
        file_sequence=seq,
    )
    raw, _ = synthesize(run=5000 + day.day, stream="Global", sequence=seq, start_time_ns=seq * 10**9, size=20_000)
    raw_path = work / name.name
    raw_path.write_bytes(raw)
    rtraw_path = raw_path.with_suffix(".rtraw")
    # The RTRAW a keep-up would have made: the real raw2rtraw payload.
    subprocess.run(
        [sys.executable, "-m", "rawflow.payloads", "raw2rtraw", str(raw_path), str(rtraw_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    data = rtraw_path.read_bytes()
    if malformed:
        data = b"not a ROOT file" + data[64:]
    lfn = lfn_for(DataType.RTRAW, day, rtraw_path.name)
    storage.put_bytes(sites.sites_config.tier0.pfn(lfn), data)
    return FileRecord(
        lfn=lfn,
        size=len(data),
        adler32=f"{zlib.adler32(data) & 0xFFFFFFFF:08x}",
        data_type=DataType.RTRAW,
        block_id=f"{day:%Y%m%d}",
        run_number=5000 + day.day,
        stream="Global",
        received_at=datetime.now(UTC),
    )


@pytest.fixture(scope="module")
def grid(local_sites: LocalSites, storage: Gfal2Storage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    work = tmp_path_factory.mktemp("campaign")
    db = f"sqlite:///{work}/catalogue.db"
    catalogue = SqlCatalogue(db)
    tag = f"c{uuid.uuid4().hex[:6]}"
    rtraws: dict[str, list[str]] = {}
    for day in DAYS:
        records = [_rtraw(storage, local_sites, day, seq, tag, work) for seq in range(1, FILES_PER_DAY + 1)]
        catalogue.register_files(records, site=local_sites.sites_config.tier0.name, state=ReplicaState.VALIDATED)
        rtraws[f"{day:%Y%m%d}"] = [r.lfn for r in records]
    yield Grid(catalogue=catalogue, jobs=JobStore(db), storage=storage, sites=local_sites, rtraws=rtraws)
    catalogue.close()


def _arrive_at_input_site(grid: Grid, block: str) -> None:
    """What the RTRAW block DAG does: the block is closed and every file validated at CNAF."""
    grid.catalogue.close_block(DataType.RTRAW, block)
    grid.catalogue.set_replica_state(grid.rtraws[block], INPUT_SITE, ReplicaState.VALIDATED)


def _context(grid: Grid, backend: ComputeBackend) -> KeepupContext:
    return KeepupContext(
        catalogue=grid.catalogue,
        backend=backend,
        storage=grid.storage,
        sites=grid.sites.sites_config,
        jobs=grid.jobs,
        batch_size=10,
        policy=RetryPolicy(max_failures=2, max_attempts=4, backoff=timedelta(0)),
    )


@pytest.mark.skipif(not DIRAC_PYTHON.exists(), reason="scripts/setup-dirac.sh was not run")
def test_rereconstruction_on_dirac_local_execution(grid: Grid, storage_spec: StorageSpec) -> None:
    campaign = load_campaign(
        ROOT / "config" / "campaigns" / "rerec-2026-11.yaml", known_sites=grid.sites.sites_config.sites
    )
    from rawflow.transfer.gfal2_tool import Gfal2Transfertool

    tool = Gfal2Transfertool(storage_spec)
    backend = get_compute_backend(
        "dirac",
        mode="local",
        work_dir=tempfile.mkdtemp(prefix="rawflow-campaign-dirac-"),
        slots=2,
        site=campaign.site,
        priority=campaign.priority,
    )
    ctx = _context(grid, backend)
    blocks = sorted(grid.rtraws)
    # The last day is not complete at CNAF yet: the first two run, the third waits.
    for block in blocks[:2]:
        _arrive_at_input_site(grid, block)
    reports = run_campaign(
        ctx, campaign, today=date(2026, 12, 2), timeout=timedelta(minutes=5), poll_interval=1.0, transfertool=tool
    )
    assert [r.total_submitted for r in reports.values()] == [FILES_PER_DAY, FILES_PER_DAY, 0]
    assert not any(r.problematic or r.timed_out for r in reports.values()), {b: r.to_dict() for b, r in reports.items()}
    status = campaign_status(campaign, grid.jobs, grid.catalogue)
    assert (status.files, status.processed, status.status) == (4, 4, "Done")

    # The day completes: only it is processed now.
    _arrive_at_input_site(grid, blocks[2])
    reports = run_campaign(
        ctx, campaign, today=date(2026, 12, 2), timeout=timedelta(minutes=5), poll_interval=1.0, transfertool=tool
    )
    assert [r.total_submitted for r in reports.values()] == [0, 0, FILES_PER_DAY]

    # Every input once: one ESD per RTRAW, registered with lineage, at the Tier-0 with the catalogued checksum.
    inputs = [lfn for block in blocks for lfn in grid.rtraws[block]]
    children = grid.catalogue.children(inputs, DataType.ESD)
    assert children == {lfn: [campaign_output_lfn(lfn, DataType.ESD, campaign.name)] for lfn in inputs}
    for lfn, (esd,) in children.items():
        assert grid.catalogue.parents([esd]) == {esd: [lfn]}
        record = grid.catalogue.get_file(esd)
        assert record is not None and record.data_type is DataType.ESD
        assert grid.storage.checksum(ctx.url(esd)) == record.adler32
    # Replicated to both destination SEs and validated there: the same bytes as at the Tier-0.
    for esd in (c[0] for c in children.values()):
        replicas = grid.catalogue.replica_states([esd])[esd]
        for site in campaign.destinations:
            assert replicas[site].state is ReplicaState.VALIDATED, (esd, site, replicas)
            url = grid.sites.sites_config[site].pfn(esd)
            assert grid.storage.checksum(url) == grid.catalogue.get_file(esd).adler32  # type: ignore[union-attr]
    status = campaign_status(campaign, grid.jobs, grid.catalogue)
    assert (status.files, status.processed, status.processed_pct, status.status) == (6, 6, 100.0, "Done")
    assert (status.outputs, status.replicated) == (6, 6)
    assert status.jobs == {"done": 6}

    # Re-running the finished campaign submits nothing.
    reports = run_campaign(ctx, campaign, today=date(2026, 12, 2), timeout=timedelta(minutes=1), poll_interval=1.0)
    assert sum(r.total_submitted for r in reports.values()) == 0
    backend.close()


@pytest.fixture(scope="module")
def payload_pool() -> Iterator[CondorPool]:
    """A pool with the real payloads in its software area (the session pool has the test stand-ins)."""
    ensure_installed()
    state_dir = Path(tempfile.mkdtemp(prefix="rawflow-campaign-condor-"))
    try:
        yield start_pool(state_dir, num_cpus=2)
    finally:
        stop_pool(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


def test_the_same_campaign_on_htcondor(grid: Grid, payload_pool: CondorPool, storage_spec: StorageSpec) -> None:
    from rawflow.transfer.gfal2_tool import Gfal2Transfertool

    document = {**__import__("yaml").safe_load((ROOT / "config/campaigns/rerec-2026-11.yaml").read_text())}
    document.update(name="rerec-2026-11-condor", backend="htcondor")
    campaign = parse_campaign(document, source="rerec-condor")
    for block in sorted(grid.rtraws):
        _arrive_at_input_site(grid, block)
    backend = get_compute_backend("htcondor", condor_config=str(payload_pool.client_config_path), timeout=30)
    ctx = _context(grid, backend)
    reports = run_campaign(
        ctx,
        campaign,
        today=date(2026, 12, 2),
        timeout=timedelta(minutes=6),
        poll_interval=1.0,
        transfertool=Gfal2Transfertool(storage_spec),
    )
    assert sum(r.total_submitted for r in reports.values()) == 6, {b: r.to_dict() for b, r in reports.items()}
    status = campaign_status(campaign, grid.jobs, grid.catalogue)
    assert (status.processed, status.status) == (6, "Done"), status.to_dict()
    assert sum(r.total_submitted for r in run_campaign(ctx, campaign, today=date(2026, 12, 2)).values()) == 0
    backend.close()


@pytest.mark.skipif(not DIRAC_PYTHON.exists(), reason="scripts/setup-dirac.sh was not run")
def test_a_failing_subset_is_retried_then_problematic_with_the_reason(
    grid: Grid, local_sites: LocalSites, storage: Gfal2Storage, tmp_path: Path
) -> None:
    day = date(2026, 11, 24)
    tag = f"b{uuid.uuid4().hex[:6]}"
    good = _rtraw(storage, local_sites, day, 1, tag, tmp_path)
    bad = _rtraw(storage, local_sites, day, 2, tag, tmp_path, malformed=True)
    grid.catalogue.register_files([good, bad], site=local_sites.sites_config.tier0.name, state=ReplicaState.VALIDATED)
    grid.rtraws[f"{day:%Y%m%d}"] = [good.lfn, bad.lfn]
    _arrive_at_input_site(grid, f"{day:%Y%m%d}")
    document = {**__import__("yaml").safe_load((ROOT / "config/campaigns/rerec-2026-11.yaml").read_text())}
    document.update(name="rerec-bad", input={"data_type": "RTRAW", "site": INPUT_SITE, "blocks": [f"{day:%Y%m%d}"]})
    campaign = parse_campaign(document, source="rerec-bad")
    backend = get_compute_backend("dirac", mode="local", work_dir=str(tmp_path / "dirac"), slots=2)
    ctx = _context(grid, backend)
    reports = run_campaign(ctx, campaign, today=date(2026, 12, 2), timeout=timedelta(minutes=5), poll_interval=1.0)
    (report,) = reports.values()
    assert report.total_submitted == 3  # two files, the bad one twice (max_failures=2)
    ((key, reason),) = report.problematic
    assert reason.startswith("failed 2 times, last: exit code 3:"), reason
    status = campaign_status(campaign, grid.jobs, grid.catalogue)
    # The good file's ESD is made but not replicated (no transfer tool here): made, not processed.
    assert (status.files, status.processed, status.outputs, status.status) == (2, 0, 1, "Problematic")
    assert status.failures == ((key, reason),)
    assert grid.catalogue.children([good.lfn, bad.lfn], DataType.ESD) == {
        good.lfn: [campaign_output_lfn(good.lfn, DataType.ESD, campaign.name)]
    }
    backend.close()


@pytest.mark.skipif(not DIRAC_PYTHON.exists(), reason="scripts/setup-dirac.sh was not run")
def test_parameter_and_multi_file_splits_run_with_exact_sub_job_counts(
    grid: Grid, local_sites: LocalSites, storage: Gfal2Storage, tmp_path: Path
) -> None:
    """By two parameters (2 × 2 combinations, 2 files per job) over 3 files: 2 groups × 4 = 8 sub-jobs, 12 ESD,
    each with its combination in its provenance (vertex_scale changes the vertex); by run: 1 sub-job of 3
    files, 3 ESD each with lineage to its own input only."""
    import json as _json

    import numpy as np
    import uproot
    import yaml

    day = date(2026, 11, 25)
    block = f"{day:%Y%m%d}"
    tag = f"p{uuid.uuid4().hex[:6]}"
    records = [_rtraw(storage, local_sites, day, seq, tag, tmp_path) for seq in (1, 2, 3)]
    grid.catalogue.register_files(records, site=local_sites.sites_config.tier0.name, state=ReplicaState.VALIDATED)
    grid.rtraws[block] = [r.lfn for r in records]
    _arrive_at_input_site(grid, block)
    inputs = sorted(r.lfn for r in records)
    document = yaml.safe_load((ROOT / "config/campaigns/rerec-2026-11.yaml").read_text())
    sweep = {"vertex_scale": [1.5, 2.0], "seed": [7, 8]}
    document.update(
        name="rerec-sweep",
        input={"data_type": "RTRAW", "site": INPUT_SITE, "blocks": [block]},
        splitter={"by": "parameters", "files_per_job": 2, "parameters": sweep},
    )
    sweep_campaign = parse_campaign(document, source="rerec-sweep")
    backend = get_compute_backend("dirac", mode="local", work_dir=str(tmp_path / "dirac"), slots=2)
    ctx = _context(grid, backend)
    (report,) = run_campaign(
        ctx, sweep_campaign, today=date(2026, 12, 2), timeout=timedelta(minutes=6), poll_interval=1.0
    ).values()
    assert report.total_submitted == 8 and not report.problematic, report.to_dict()
    jobs = grid.jobs.list_jobs(key_prefix="c.rerec-sweep.")
    assert len(jobs) == 8 and {j.state.value for j in jobs} == {"done"}
    assert sorted(len(j.inputs) for j in jobs) == [1] * 4 + [2] * 4
    combos = [{"seed": str(s), "vertex_scale": str(v)} for v in sweep["vertex_scale"] for s in sweep["seed"]]
    assert sorted(map(lambda j: sorted(j.parameters), jobs)) == sorted(
        sorted(c.items()) for c in combos for _ in (1, 2)
    )
    # Every (input, combination) once: 12 ESD, each made from its own input with its combination.
    vertices: dict[tuple[str, str], float] = {}
    for job in jobs:
        for rtraw, esd in zip(job.inputs, job.outputs, strict=True):
            assert esd == campaign_output_lfn(rtraw, DataType.ESD, "rerec-sweep", dict(job.parameters))
            assert grid.catalogue.parents([esd]) == {esd: [rtraw]}
            local = tmp_path / Path(esd).name
            local.write_bytes(storage.read_bytes(grid.sites.sites_config.tier0.pfn(esd)))
            with uproot.open(local) as file:
                provenance = _json.loads(str(file["provenance"]))
                r = file["esd"]["r"].array(library="np")
            assert provenance["parameters"] == dict(job.parameters) and provenance["input"] == Path(rtraw).name
            vertices[rtraw, dict(job.parameters)["vertex_scale"]] = float(np.mean(r))
    assert len({esd for j in jobs for esd in j.outputs}) == 12
    for rtraw in inputs:  # the parameter reached the reconstruction: r scales with vertex_scale
        assert vertices[rtraw, "2.0"] == pytest.approx(vertices[rtraw, "1.5"] * 2.0 / 1.5, rel=1e-4)

    # By run: the block's 3 files are one run, so one sub-job over 3 files.
    document.update(name="rerec-byrun", splitter={"by": "run"})
    by_run = parse_campaign(document, source="rerec-byrun")
    (report,) = run_campaign(
        ctx, by_run, today=date(2026, 12, 2), timeout=timedelta(minutes=5), poll_interval=1.0
    ).values()
    assert report.total_submitted == 1 and not report.problematic, report.to_dict()
    (job,) = grid.jobs.list_jobs(key_prefix="c.rerec-byrun.")
    assert job.inputs == tuple(inputs) and job.state.value == "done"
    outputs = [campaign_output_lfn(lfn, DataType.ESD, "rerec-byrun") for lfn in inputs]
    assert job.outputs == tuple(outputs)
    assert grid.catalogue.parents(outputs) == {esd: [rtraw] for rtraw, esd in zip(inputs, outputs, strict=True)}
    # A second run submits nothing.
    for campaign in (sweep_campaign, by_run):
        again = run_campaign(ctx, campaign, today=date(2026, 12, 2), timeout=timedelta(minutes=1), poll_interval=1.0)
        assert sum(r.total_submitted for r in again.values()) == 0
    backend.close()


@pytest.mark.skipif(not DIRAC_PYTHON.exists(), reason="scripts/setup-dirac.sh was not run")
def test_a_user_analysis_writes_into_the_users_area_and_analysis_status_shows_it(
    grid: Grid,
    storage_spec: StorageSpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json as _json

    import yaml

    from rawflow.cli import main as cli
    from rawflow.transfer.gfal2_tool import Gfal2Transfertool

    block = "20261121"
    _arrive_at_input_site(grid, block)
    name = f"vtx-{uuid.uuid4().hex[:6]}"
    document = yaml.safe_load((ROOT / "config/campaigns/rerec-2026-11.yaml").read_text())
    document.update(
        name=name, kind="analysis", user="alice", input={"data_type": "RTRAW", "site": INPUT_SITE, "blocks": [block]}
    )
    folder = tmp_path / "analyses"
    folder.mkdir()
    (folder / f"alice.{name}.yaml").write_text(yaml.safe_dump(document))  # as `rawflow submit` keeps it
    analysis = load_campaign(folder / f"alice.{name}.yaml")
    backend = get_compute_backend("dirac", mode="local", work_dir=str(tmp_path / "dirac"), slots=2)
    (report,) = run_campaign(
        _context(grid, backend),
        analysis,
        today=date(2026, 12, 2),
        timeout=timedelta(minutes=5),
        poll_interval=1.0,
        transfertool=Gfal2Transfertool(storage_spec),
    ).values()
    backend.close()
    assert report.total_submitted == FILES_PER_DAY and not report.problematic, report.to_dict()
    area = f"/juno/user/alice/{name}/esd/2026/1121/"
    outputs = {lfn: campaign_output_lfn(lfn, DataType.ESD, name, user="alice") for lfn in grid.rtraws[block]}
    assert all(out.startswith(area) for out in outputs.values())
    # (other campaigns of this module reconstruct the same block: their ESD are other children of these inputs)
    assert grid.catalogue.parents(list(outputs.values())) == {out: [lfn] for lfn, out in outputs.items()}
    for lfn, children in grid.catalogue.children(list(outputs), DataType.ESD).items():
        assert [c for c in children if c.startswith("/juno/user/")] == [outputs[lfn]]
    for out in outputs.values():  # at the Tier-0 and both destinations, in the user's area, checksummed
        record = grid.catalogue.get_file(out)
        assert record is not None and record.block_id == block
        for site in [grid.sites.sites_config.tier0.name, *analysis.destinations]:
            assert grid.storage.checksum(grid.sites.sites_config[site].pfn(out)) == record.adler32

    monkeypatch.setenv("RAWFLOW_ANALYSES_DIR", str(folder))
    db = str(grid.catalogue.url)
    assert cli(["analysis", "status", name, "--jobs-db", db, "--catalogue", db, "--json"]) == 0
    (row,) = _json.loads(capsys.readouterr().out)
    assert (row["status"], row["processed_pct"], row["user"], row["area"]) == (
        "Done",
        100.0,
        "alice",
        f"/juno/user/alice/{name}",
    )
    assert {f["lfn"]: f["replicas"] for f in row["output_files"]} == {
        out: {site: "validated" for site in analysis.destinations} for out in outputs.values()
    }
    assert cli(["analysis", "list", "--user", "alice", "--jobs-db", db, "--catalogue", db]) == 0
    listed = capsys.readouterr().out
    assert name in listed and f"alice's outputs under /juno/user/alice/{name}/" in listed
