"""An MC production campaign (ProdSys's detsim → elecsim → cal → rec) end to end through its production path
(the keep-up round machinery with the campaign's planner) on DIRAC's local execution (the real DIRAC client in
.venv-dirac, the real payloads staged in and out over xrootd by the job wrapper), against the loopback
xrootd sites and a catalogue: 2 generator jobs × 4 steps, every step's outputs registered once with lineage
to the file it was made from, the final ESD replicated to the campaign's 2 destination SEs and validated, and
a re-run that submits nothing and registers nothing."""

from __future__ import annotations

import itertools
import json
import tempfile
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import uproot
import yaml

from rawflow.catalogue.base import ReplicaState
from rawflow.catalogue.sql import SqlCatalogue
from rawflow.compute import get_compute_backend
from rawflow.grid.xrootd import LocalSites
from rawflow.naming import DataType
from rawflow.processing.campaign_round import campaign_status, mc_seed, run_campaign
from rawflow.processing.campaigns import parse_campaign
from rawflow.processing.jobs import JobStore
from rawflow.processing.keepup import KeepupContext
from rawflow.processing.planning import JobPhase, RetryPolicy
from rawflow.storage.gfal2_storage import Gfal2Storage
from rawflow.transfer.engine import StorageSpec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DIRAC_PYTHON = ROOT / ".venv-dirac" / "bin" / "python"
EXAMPLE = ROOT / "config" / "campaigns" / "mc-ibd-2026-12.yaml"
JOBS, EVENTS = 2, 50
STEPS = (("detsim", DataType.DETSIM), ("elecsim", DataType.ELECSIM), ("cal", DataType.CALIB), ("rec", DataType.ESD))


@pytest.fixture
def catalogue(tmp_path: Path) -> Iterator[tuple[SqlCatalogue, JobStore]]:
    url = f"sqlite:///{tmp_path}/catalogue.db"
    catalogue, jobs = SqlCatalogue(url), JobStore(url)
    yield catalogue, jobs
    catalogue.close()
    jobs.close()


def _files(catalogue: SqlCatalogue, block: str) -> dict[DataType, list[tuple[str, int, str]]]:
    return {t: [(f.lfn, f.size, f.adler32) for f in catalogue.files_in_block(t, block)] for _, t in STEPS}


@pytest.mark.skipif(not DIRAC_PYTHON.exists(), reason="scripts/setup-dirac.sh was not run")
def test_an_mc_campaign_runs_its_four_steps_on_dirac_and_a_rerun_does_nothing(
    catalogue: tuple[SqlCatalogue, JobStore],
    local_sites: LocalSites,
    storage: Gfal2Storage,
    storage_spec: StorageSpec,
    tmp_path: Path,
) -> None:
    from rawflow.transfer.gfal2_tool import Gfal2Transfertool

    cat, jobs = catalogue
    document = yaml.safe_load(EXAMPLE.read_text())
    name = f"mc-{uuid.uuid4().hex[:6]}"  # the session's xrootd sites outlive one test: names of its own
    document.update(name=name)
    document["mc"].update(jobs=JOBS, events_per_job=EVENTS)
    campaign = parse_campaign(document, source="mc.yaml", known_sites=local_sites.sites_config.sites)
    assert campaign.mc is not None
    block = campaign.mc.block_id
    backend = get_compute_backend(
        "dirac",
        mode="local",
        work_dir=tempfile.mkdtemp(prefix="rawflow-mc-dirac-"),
        slots=2,
        site=campaign.site,
        priority=campaign.priority,
    )
    ctx = KeepupContext(
        catalogue=cat,
        backend=backend,
        storage=storage,
        sites=local_sites.sites_config,
        jobs=jobs,
        batch_size=10,
        policy=RetryPolicy(max_failures=2, max_attempts=4, backoff=timedelta(0)),
    )
    tool = Gfal2Transfertool(storage_spec)
    today = date(2026, 12, 2)

    reports = run_campaign(
        ctx, campaign, today=today, timeout=timedelta(minutes=8), poll_interval=1.0, transfertool=tool
    )
    (report,) = reports.values()
    assert report.submitted == {step: JOBS for step, _ in STEPS}, report.to_dict()
    assert report.registered == report.submitted and not report.problematic and not report.timed_out

    # The jobs: 2 per step, all done, run by DIRAC (each its own DIRAC local job).
    records = jobs.list_jobs(key_prefix=f"c.{name}.")
    assert len(records) == JOBS * len(STEPS)
    assert {(r.state, r.backend, r.events) for r in records} == {(JobPhase.DONE, "dirac", EVENTS)}
    by_step = {step: [r for r in records if r.payload == step] for step, _ in STEPS}

    # Every step's outputs registered once, in the MC day's block, with the checksum of the file at the Tier-0.
    files = _files(cat, block)
    for step, data_type in STEPS:
        made = sorted(lfn for r in by_step[step] for lfn in r.outputs)
        assert [lfn for lfn, _, _ in files[data_type]] == made and len(made) == JOBS, (step, files[data_type])
        for lfn, size, adler32 in files[data_type]:
            url = ctx.url(lfn)
            assert (storage.stat(url).size, storage.checksum(url)) == (size, adler32)
    # Lineage: a generated file has no parent; each later output exactly the file it was made from.
    assert cat.parents([lfn for r in by_step["detsim"] for lfn in r.outputs]) == {}
    for (earlier, _), (later, data_type) in itertools.pairwise(STEPS):
        made_before = {lfn for r in by_step[earlier] for lfn in r.outputs}
        for record in by_step[later]:
            ((source,), (output,)) = (record.inputs, record.outputs)
            assert source in made_before
            assert cat.parents([output]) == {output: [source]}
            assert cat.children([source], data_type) == {source: [output]}

    # The generator's seed is the campaign's and the job key's; the event numbers carry through to the ESD.
    for record in by_step["detsim"]:
        assert dict(record.parameters)["seed"] == str(mc_seed(name, record.key))
    detsim_lfn = by_step["detsim"][0].outputs[0]
    esd_lfn = detsim_lfn
    for step, _ in STEPS[1:]:  # follow the file through the chain
        esd_lfn = next(r.outputs[0] for r in by_step[step] if r.inputs == (esd_lfn,))
    local = {}
    for lfn in (detsim_lfn, esd_lfn):
        local[lfn] = tmp_path / Path(lfn).name
        local[lfn].write_bytes(storage.read_bytes(ctx.url(lfn)))
    with uproot.open(local[detsim_lfn]) as file:
        header = file["header"].arrays(library="np")
        truth_numbers = list(file["truth"]["event_number"].array(library="np"))
        assert json.loads(str(file["provenance"]))["generator"] == "ibd"
    assert int(header["seed"][0]) == mc_seed(name, by_step["detsim"][0].key)
    with uproot.open(local[esd_lfn]) as file:
        assert list(file["esd"]["event_number"].array(library="np")) == truth_numbers == list(range(EVENTS))

    # The ESD at both destination SEs, validated, the same bytes: the campaign is done, 100 %.
    esds = [lfn for lfn, _, _ in files[DataType.ESD]]
    replicas = cat.replica_states(esds)
    for lfn, _, adler32 in files[DataType.ESD]:
        for site in campaign.destinations:
            assert replicas[lfn][site].state is ReplicaState.VALIDATED, (lfn, site, replicas[lfn])
            assert storage.checksum(local_sites.sites_config[site].pfn(lfn)) == adler32
    status = campaign_status(campaign, jobs, cat)
    assert (status.files, status.processed, status.processed_pct, status.status) == (JOBS, JOBS, 100.0, "Done")
    assert (status.outputs, status.replicated, status.jobs) == (JOBS, JOBS, {"done": JOBS * len(STEPS)})

    # A re-run of the finished campaign submits nothing, registers nothing, copies nothing.
    again = run_campaign(ctx, campaign, today=today, timeout=timedelta(minutes=2), poll_interval=1.0, transfertool=tool)
    assert [(r.total_submitted, r.registered, r.resubmitted) for r in again.values()] == [(0, {}, 0)]
    assert _files(cat, block) == files
    assert cat.replica_states(esds) == replicas
    assert len(jobs.list_jobs(key_prefix=f"c.{name}.")) == JOBS * len(STEPS)
    backend.close()
