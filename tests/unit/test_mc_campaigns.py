"""MC campaigns (``kind: mc``, ProdSys's detsim → elecsim → cal → rec): the steering file's rules, the generator's
sub-jobs (deterministic keys, seeds and file names), multi-step planning (a step waits for the one before it,
no file is grouped twice) and whole rounds through the keep-up machinery with the real payloads run in this
process by a test double of the compute backend: every step's outputs registered once with lineage, a re-run
submits and registers nothing."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from rawflow.catalogue.base import FileRecord, ReplicaState, validate_files
from rawflow.catalogue.sql import SqlCatalogue
from rawflow.compute.base import JobHandle, JobOutcome, JobSpec, JobState, JobStatus
from rawflow.naming import DataType, parse_lfn, user_lfn
from rawflow.processing.campaign_round import (
    campaign_context,
    campaign_status,
    mc_output_lfn,
    mc_seed,
    plan_campaign_block,
    run_campaign,
    step_output_lfn,
)
from rawflow.processing.campaigns import CampaignError, generator_jobs, load_campaign, parse_campaign
from rawflow.processing.jobs import JobRecord, JobStore
from rawflow.processing.keepup import KeepupContext
from rawflow.processing.planning import JobPhase, RetryPolicy
from rawflow.sites import default_sites_path, load_sites
from rawflow.storage.base import StatResult

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "campaigns" / "mc-ibd-2026-12.yaml"
RERUN = ROOT / "config" / "campaigns" / "rerec-2026-11.yaml"
SITES = ["IHEP-EOS", "IHEP-TAPE", "CNAF-STORM", "JINR-EOS", "IN2P3-DCACHE"]
DELETE = object()
TODAY = date(2026, 12, 2)


def base(path: Path = EXAMPLE) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def edit(path: str, value: Any, document: dict[str, Any] | None = None) -> dict[str, Any]:
    document = copy.deepcopy(document or base())
    parts = path.split(".")
    target = document
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is DELETE:
        del target[parts[-1]]
    else:
        target[int(parts[-1]) if parts[-1].isdigit() else parts[-1]] = value
    return document


def small(**mc: Any) -> dict[str, Any]:
    """The example, smaller: 2 jobs of 40 events (or as given)."""
    document = base()
    document["mc"].update({"jobs": 2, "events_per_job": 40, **mc})
    return document


# -- the steering file -------------------------------------------------------------------------------------------


def test_the_example_mc_campaign_loads() -> None:
    campaign = load_campaign(EXAMPLE, known_sites=SITES)
    assert campaign.kind == "mc" and campaign.generated and campaign.input_data_type is None
    assert [s.payload for s in campaign.steps] == ["detsim", "elecsim", "cal", "rec"]
    assert [s.output_data_type for s in campaign.steps] == [
        DataType.DETSIM,
        DataType.ELECSIM,
        DataType.CALIB,
        DataType.ESD,
    ]
    assert campaign.mc is not None and (campaign.mc.jobs, campaign.mc.events_per_job) == (10, 500)
    assert campaign.input_blocks(TODAY) == ["20261201"] == campaign.input_blocks(date(2030, 1, 1))
    assert not load_campaign(RERUN).generated


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("mc", DELETE, "f.yaml: mc=None: missing"),
        ("mc.jobs", 0, "f.yaml: mc.jobs=0: 0 is less than the minimum of 1"),
        ("mc.day", "2026-13-01", "f.yaml: mc.day='2026-13-01': not a date"),
        ("mc.seed", 7, "f.yaml: mc.seed=7: unknown field"),
        (
            "input",
            {"data_type": "RTRAW", "site": "CNAF-STORM", "blocks": ["20261121"]},
            "an mc campaign generates its events: no input",
        ),
        ("steps.0.payload", "elecsim", "f.yaml: steps[0].payload='elecsim': an mc campaign starts with a generator"),
        ("steps.1.payload", "detsim", "f.yaml: steps[1].payload='detsim': a generator: only the first step"),
        ("steps.3.payload", "raw2rtraw", "f.yaml: steps[3].payload='raw2rtraw': reads RAW, gets CALIB"),
        ("steps.2.output_data_type", "ESD", "f.yaml: steps[2].output_data_type='ESD': cal writes CALIB"),
        ("steps.0.parameters", {"seed": 5}, "f.yaml: steps[0].parameters.seed=5: set per job by the campaign"),
        (
            "splitter",
            {"by": "parameters", "parameters": {"events": [10, 20]}},
            "f.yaml: splitter.parameters.events='[10, 20]': set per job by the campaign",
        ),
        ("output.data_type", "CALIB", "f.yaml: output.data_type='CALIB': the last step writes ESD"),
    ],
)
def test_each_mc_mistake_is_one_line(path: str, value: Any, message: str) -> None:
    with pytest.raises(CampaignError) as info:
        parse_campaign(edit(path, value), source="f.yaml", known_sites=SITES)
    assert "\n" not in str(info.value) and message in str(info.value), str(info.value)


def test_only_an_mc_campaign_generates_and_rec_reads_rtraw_or_calib() -> None:
    document = base(RERUN)
    with pytest.raises(CampaignError, match=r"f.yaml: mc=.*: only an mc campaign generates events, not reprocessing"):
        parse_campaign({**document, "mc": base()["mc"]}, source="f.yaml")
    with pytest.raises(CampaignError, match=r"steps\[0\].payload='detsim': a generator: only the first step of an mc"):
        parse_campaign(
            edit("steps.0", {"name": "gen", "payload": "detsim", "output_data_type": "DETSIM"}, document),
            source="f.yaml",
        )
    with pytest.raises(CampaignError, match=r"steps\[0\].payload='rec': reads RTRAW or CALIB, gets RAW"):
        parse_campaign(edit("input.data_type", "RAW", document), source="f.yaml")


# -- generator sub-jobs and names ------------------------------------------------------------------------------


def test_generator_sub_jobs_keys_seeds_and_names_are_deterministic() -> None:
    document = small(jobs=3)
    document["splitter"] = {"by": "parameters", "parameters": {"generator": ["ibd", "gamma"]}}
    campaign = parse_campaign(document, source="f.yaml")
    detsim = campaign.steps[0]
    subs = generator_jobs(campaign, detsim)
    assert len(subs) == 3 * 2 and len({s.key for s in subs}) == 6
    assert [s.key for s in subs] == [s.key for s in generator_jobs(campaign, detsim)]
    assert all(s.inputs == () and s.key.startswith("c.mc-ibd-2026-12.detsim.") for s in subs)
    seeds = {mc_seed(campaign.name, s.key) for s in subs}
    assert len(seeds) == 6 and all(0 <= seed < 2**63 for seed in seeds)
    assert mc_seed(campaign.name, subs[0].key) == mc_seed(campaign.name, subs[0].key)
    assert mc_seed("another", subs[0].key) != mc_seed(campaign.name, subs[0].key)
    names = [mc_output_lfn(campaign, detsim, s.number or 0, s.parameters) for s in subs]
    assert len(set(names)) == 6
    first = parse_lfn(names[0])
    assert first.data_type is DataType.DETSIM and first.block_id == "20261201"
    assert (first.file.run_number, first.file.stream_type, first.file.file_sequence) == (900001, "MC", 1)
    assert {parse_lfn(n).file.stream_name for n in names} == {"ibd", "gamma"}
    assert names[0].startswith("/juno/detsim/2026/1201/JUNO.900001.MC.") and "_p" in names[0]
    plain = parse_campaign(small(jobs=1), source="f.yaml")
    assert mc_output_lfn(plain, plain.steps[0], 0) == (
        "/juno/detsim/2026/1201/JUNO.900001.MC.ibd.mc-ibd-2026-12.20261201000000.00001.detsim"
    )
    record = FileRecord(names[0], 1, "00000001", DataType.DETSIM, "20261201", 900001, "ibd", datetime.now(UTC))
    validate_files([record], 1024)  # the catalogue takes the new types' LFNs


def test_a_later_steps_output_keeps_its_inputs_name_and_area() -> None:
    detsim = "/juno/detsim/2026/1201/JUNO.900001.MC.ibd.mc-x.20261201000000.00001.detsim"
    assert step_output_lfn(detsim, DataType.ELECSIM) == (
        "/juno/elecsim/2026/1201/JUNO.900001.MC.ibd.mc-x.20261201000000.00001.elecsim"
    )
    rtraw = user_lfn(
        "alice", "study", "/juno/rtraw/2026/1121/JUNO.005021.Physics.Global.ds-0_study.20261121083000.00001.rtraw"
    )
    assert step_output_lfn(rtraw, DataType.ESD) == user_lfn(
        "alice", "study", "/juno/esd/2026/1121/JUNO.005021.Physics.Global.ds-0_study.20261121083000.00001.esd"
    )


# -- planning: a step waits for the one before it; no file is grouped twice ---------------------------------------


@dataclass
class Grid:
    catalogue: SqlCatalogue
    jobs: JobStore
    storage: DirStorage
    ctx: KeepupContext


class DirStorage:
    """The Tier-0 as a local directory (a URL's path after ``/juno/``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, url: str) -> Path:
        return self.root / url.split("/juno/", 1)[1]

    def stat(self, url: str) -> StatResult:
        return StatResult(url, self.path(url).stat().st_size, False, 0.0)

    def checksum(self, url: str, algorithm: str = "adler32") -> str:
        return f"{zlib.adler32(self.path(url).read_bytes()) & 0xFFFFFFFF:08x}"


class InProcessRunner:
    """A unit-test double of a compute backend: runs each job's real payload in this process when polled (the
    job wrapper's work: stage in from and out to DirStorage, a report with each output's size, adler32 and
    events). ``fail_once`` keys fail their first attempt with exit code 1."""

    name = "inprocess"

    def __init__(self, storage: DirStorage, scratch: Path, fail_once: Sequence[str] = ()) -> None:
        self.storage, self.scratch = storage, scratch
        self.specs: dict[str, JobSpec] = {}
        self.outcomes: dict[str, JobOutcome] = {}
        self.fail_once = set(fail_once)
        self.submitted: list[str] = []

    def submit(self, jobs: Sequence[JobSpec], *, batch: str) -> list[JobHandle]:
        handles = []
        for spec in jobs:
            new = spec.key not in self.specs
            self.specs.setdefault(spec.key, spec)
            if new:
                self.submitted.append(spec.key)
            handles.append(JobHandle(spec.key, spec.key, batch, new))
        return handles

    def _run(self, spec: JobSpec) -> JobOutcome:
        from rawflow.payloads.cli import main

        work = self.scratch / spec.key
        work.mkdir(parents=True, exist_ok=True)
        argv, outputs = [], []
        for arg in spec.args:
            if arg.startswith("@in:"):
                local = work / Path(arg).name
                local.write_bytes(self.storage.path(arg[4:]).read_bytes())
                argv.append(str(local))
            elif arg.startswith("@out:"):
                local = work / f"out-{Path(arg).name}"
                outputs.append((arg[5:], local))
                argv.append(str(local))
            else:
                argv.append(arg)
        rawflow_key = spec.labels["rawflow_key"]
        if rawflow_key in self.fail_once:
            self.fail_once.discard(rawflow_key)
            return JobOutcome(spec.key, spec.key, JobState.FAILED, exit_code=1, stderr_tail="injected\nfailure")
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            code = main([spec.payload, *argv])
        assert code == 0, (spec.payload, argv)
        report = json.loads(stdout.getvalue())
        entries = []
        for url, local in outputs:
            target = self.storage.path(url)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(local.read_bytes())
            events = next(o["events"] for o in report["outputs"] if o["name"] == local.name)
            entries.append(
                {"url": url, "size": target.stat().st_size, "adler32": self.storage.checksum(url), "events": events}
            )
        return JobOutcome(
            spec.key, spec.key, JobState.DONE, exit_code=0, report={"outputs": entries, "payload_report": report}
        )

    def poll(self, keys: Sequence[str]) -> dict[str, JobStatus]:
        statuses = {}
        for key in keys:
            if key not in self.specs:
                statuses[key] = JobStatus(key, None, JobState.MISSING)
                continue
            if key not in self.outcomes:
                self.outcomes[key] = self._run(self.specs[key])
            outcome = self.outcomes[key]
            statuses[key] = JobStatus(key, key, outcome.state, exit_code=outcome.exit_code)
        return statuses

    def collect(self, keys: Sequence[str]) -> dict[str, JobOutcome]:
        return {key: self.outcomes[key] for key in keys if key in self.outcomes}

    def release(self, keys: Sequence[str]) -> None:
        pass

    def cancel(self, keys: Sequence[str]) -> None:
        pass

    def close(self) -> None:
        pass


def grid(tmp_path: Path, **runner: Any) -> Grid:
    tmp_path.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{tmp_path}/catalogue.db"
    catalogue, jobs = SqlCatalogue(url), JobStore(url)
    storage = DirStorage(tmp_path / "t0")
    ctx = KeepupContext(
        catalogue=catalogue,
        backend=InProcessRunner(storage, tmp_path / "scratch", **runner),
        storage=storage,  # type: ignore[arg-type]
        sites=load_sites(default_sites_path()),
        jobs=jobs,
        batch_size=10,
        policy=RetryPolicy(max_failures=2, max_attempts=4, backoff=timedelta(0)),
    )
    return Grid(catalogue, jobs, storage, ctx)


def _set(jobs: JobStore, keys: Sequence[str], state: JobPhase) -> None:
    jobs.upsert([r.evolve(state=state) for r in jobs.get(keys).values()])


def test_a_step_waits_for_the_one_before_it_and_never_groups_a_file_twice(tmp_path: Path) -> None:
    document = small(jobs=3)
    document["splitter"] = {"by": "files", "files_per_job": 2}
    campaign = parse_campaign(document, source="f.yaml")
    g = grid(tmp_path)
    cctx = campaign_context(g.ctx, campaign)
    assert plan_campaign_block(cctx, campaign, "20261121") == []  # not the campaign's block
    detsim = plan_campaign_block(cctx, campaign, "20261201")
    assert [j.payload for j in detsim] == ["detsim"] * 3 and all(j.inputs == () for j in detsim)
    params = dict(detsim[0].parameters)
    assert (params["events"], params["run"], params["sequence"], params["generator"]) == ("40", "900001", "1", "ibd")
    assert params["seed"] == str(mc_seed(campaign.name, detsim[0].key))
    assert int(params["start_time_ns"]) == int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()) * 10**9
    g.jobs.upsert([JobRecord.planned(j, "x") for j in detsim])
    _set(g.jobs, [detsim[0].key, detsim[1].key], JobPhase.DONE)
    # One generator job still runs: elecsim waits (its groups of 2 must be whole).
    assert [j.key for j in plan_campaign_block(cctx, campaign, "20261201")] == [j.key for j in detsim]
    _set(g.jobs, [detsim[2].key], JobPhase.PROBLEMATIC)
    planned = plan_campaign_block(cctx, campaign, "20261201")
    (elecsim,) = [j for j in planned if j.payload == "elecsim"]
    assert elecsim.inputs == tuple(sorted(detsim[0].outputs + detsim[1].outputs))
    assert elecsim.outputs == tuple(step_output_lfn(lfn, DataType.ELECSIM) for lfn in elecsim.inputs)
    assert not any(j.payload == "cal" for j in planned)  # elecsim has not run yet
    g.jobs.upsert([JobRecord.planned(elecsim, "x")])
    # The Problematic generator job is retried and succeeds: its file makes its own group; the first stays.
    _set(g.jobs, [detsim[2].key], JobPhase.DONE)
    again = [j for j in plan_campaign_block(cctx, campaign, "20261201") if j.payload == "elecsim"]
    assert [j.inputs for j in again] == [elecsim.inputs, detsim[2].outputs]
    assert again[0] == elecsim  # as it was planned (its key, outputs and parameters)


# -- whole rounds --------------------------------------------------------------------------------------------


def test_an_mc_campaign_runs_every_step_registers_each_output_once_with_lineage_and_a_rerun_does_nothing(
    tmp_path: Path,
) -> None:
    campaign = parse_campaign(small(), source="f.yaml")
    g = grid(tmp_path)
    (report,) = run_campaign(g.ctx, campaign, today=TODAY, timeout=timedelta(minutes=2), poll_interval=0).values()
    assert report.submitted == {"detsim": 2, "elecsim": 2, "cal": 2, "rec": 2}, report.to_dict()
    assert report.registered == report.submitted and not report.problematic
    records = g.jobs.list_jobs(key_prefix="c.mc-ibd-2026-12.")
    assert len(records) == 8 and {r.state for r in records} == {JobPhase.DONE}
    assert {r.events for r in records} == {40}
    by_payload = {
        p: sorted((r for r in records if r.payload == p), key=lambda r: r.outputs)
        for p in ("detsim", "elecsim", "cal", "rec")
    }
    for payload, data_type in (
        ("detsim", DataType.DETSIM),
        ("elecsim", DataType.ELECSIM),
        ("cal", DataType.CALIB),
        ("rec", DataType.ESD),
    ):
        outputs = [lfn for r in by_payload[payload] for lfn in r.outputs]
        files = g.catalogue.files_in_block(data_type, "20261201")
        assert sorted(f.lfn for f in files) == sorted(outputs)  # each output once, in the MC day's block
        for record in files:
            assert (record.run_number, record.stream) == (900001, "ibd")
            assert record.adler32 == g.storage.checksum(g.ctx.url(record.lfn))
    # Lineage: detsim outputs have no parent; every later output exactly its input.
    detsims = [lfn for r in by_payload["detsim"] for lfn in r.outputs]
    assert g.catalogue.parents(detsims) == {}
    for earlier, later in (("detsim", "elecsim"), ("elecsim", "cal"), ("cal", "rec")):
        for record in by_payload[later]:
            assert g.catalogue.parents(list(record.outputs)) == {record.outputs[0]: [record.inputs[0]]}
            assert record.inputs[0] in {lfn for r in by_payload[earlier] for lfn in r.outputs}
    # Made, not yet at the destinations: 0 % processed; validated at both: Done, 100 %.
    status = campaign_status(campaign, g.jobs, g.catalogue)
    assert (status.files, status.processed, status.outputs, status.status) == (2, 0, 2, "Running")
    esds = [lfn for r in by_payload["rec"] for lfn in r.outputs]
    for site in campaign.destinations:
        g.catalogue.set_replica_state(esds, site, ReplicaState.VALIDATED)
    status = campaign_status(campaign, g.jobs, g.catalogue)
    assert (status.files, status.processed, status.processed_pct, status.status) == (2, 2, 100.0, "Done")

    # A re-run submits nothing and registers nothing; the same jobs, the same files.
    files_before = {
        t: g.catalogue.files_in_block(t, "20261201")
        for t in (DataType.DETSIM, DataType.ELECSIM, DataType.CALIB, DataType.ESD)
    }
    again = run_campaign(g.ctx, campaign, today=TODAY, timeout=timedelta(minutes=1), poll_interval=0)
    assert [(r.total_submitted, r.registered) for r in again.values()] == [(0, {})]
    assert {t: g.catalogue.files_in_block(t, "20261201") for t in files_before} == files_before
    assert len(g.jobs.list_jobs(key_prefix="c.mc-ibd-2026-12.")) == 8


def test_a_resubmitted_generator_job_writes_the_same_file(tmp_path: Path) -> None:
    """A generator job that failed once is run again with the same seed: its file is the one a first-time
    success would have written (the same adler32 as in a campaign where nothing failed)."""
    campaign = parse_campaign(small(jobs=1), source="f.yaml")
    key = generator_jobs(campaign, campaign.steps[0])[0].key
    flaky = grid(tmp_path / "flaky", fail_once=[key])
    (report,) = run_campaign(flaky.ctx, campaign, today=TODAY, timeout=timedelta(minutes=2), poll_interval=0).values()
    assert report.submitted["detsim"] == 2 and not report.problematic  # the first attempt failed, the retry ran
    clean = grid(tmp_path / "clean")
    run_campaign(clean.ctx, campaign, today=TODAY, timeout=timedelta(minutes=2), poll_interval=0)
    for data_type in (DataType.DETSIM, DataType.ELECSIM, DataType.CALIB, DataType.ESD):
        a = [(f.lfn, f.adler32, f.size) for f in flaky.catalogue.files_in_block(data_type, "20261201")]
        b = [(f.lfn, f.adler32, f.size) for f in clean.catalogue.files_in_block(data_type, "20261201")]
        assert a == b and len(a) == 1


def test_a_parameter_sweep_generates_per_combination_and_later_steps_follow(tmp_path: Path) -> None:
    document = small(jobs=2, events_per_job=20)
    document["splitter"] = {"by": "parameters", "files_per_job": 1, "parameters": {"generator": ["gamma", "ibd"]}}
    campaign = parse_campaign(document, source="f.yaml")
    g = grid(tmp_path)
    (report,) = run_campaign(g.ctx, campaign, today=TODAY, timeout=timedelta(minutes=2), poll_interval=0).values()
    assert report.submitted == {"detsim": 4, "elecsim": 4, "cal": 4, "rec": 4} and not report.problematic
    esds = g.catalogue.files_in_block(DataType.ESD, "20261201")
    assert len(esds) == 4 and {parse_lfn(f.lfn).file.stream_name for f in esds} == {"gamma", "ibd"}
    later = [r for r in g.jobs.list_jobs(key_prefix="c.mc-ibd-2026-12.") if r.payload != "detsim"]
    assert all(dict(r.parameters).get("generator") is None for r in later)  # the sweep is the generator's


def test_the_mc_dag_runs_every_30_minutes_without_an_input_asset() -> None:
    from dags.rawflow_campaigns import campaign_schedule

    assert type(campaign_schedule(load_campaign(EXAMPLE))).__name__ == "CronTriggerTimetable"
    assert type(campaign_schedule(load_campaign(RERUN))).__name__ == "AssetOrTimeSchedule"


def test_the_operator_goes_on_to_the_next_step_in_the_same_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deferrable CampaignOperator: when a round registers a step's last outputs and nothing is active, it
    plans the next step at once rather than at the next DAG run (here the double runs jobs as they are polled,
    so one call runs the whole chain)."""
    from rawflow_airflow.operators.campaign import CampaignOperator

    document = small()
    path = tmp_path / "mc.yaml"
    path.write_text(yaml.safe_dump(document))
    campaign = parse_campaign(document, source=str(path))
    g = grid(tmp_path / "grid")
    operator = CampaignOperator(task_id="process", campaign_path=str(path), block_ids=["20261201"])
    finished: list[list[str]] = []
    monkeypatch.setattr(operator, "_context", lambda: campaign_context(g.ctx, campaign))
    monkeypatch.setattr(operator, "_close", lambda ctx: None)
    monkeypatch.setattr(operator, "_finish", lambda ctx, blocks: finished.append(blocks))
    monkeypatch.setattr(operator, "_problematic", lambda: [])
    summary = operator.execute({})
    assert summary["20261201"]["submitted"] == {"detsim": 2, "elecsim": 2, "cal": 2, "rec": 2}, summary
    assert summary["20261201"]["registered"] == summary["20261201"]["submitted"]
    assert finished == [["20261201"]]  # then the outputs go to the destinations
    assert operator.execute({})["20261201"]["submitted"] == {}  # a re-run submits nothing
