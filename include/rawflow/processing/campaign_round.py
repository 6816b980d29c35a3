"""A campaign's rounds: the keep-up round machinery (jobs table, batches, retries, output checks, registration
with lineage) with a campaign's planner and its own slice of the jobs table (key prefix ``c.<name>.``).

Data-driven start: a step runs for an input block once that block is complete where the campaign reads it
(:func:`input_block_ready`: closed, every file validated or archived at the input site); blocks of an open
date range join as the days come. Sub-job keys are campaign + step + input LFNs, so a block, a re-run or a
second DAG run never submits the same work twice, and adding a day to the range processes only that day.

Outputs are named after their input with the campaign in the file tag (:func:`campaign_output_lfn`), so a
re-reconstruction never collides with keep-up's own ESD, and are registered at the Tier-0 with lineage; their
data type's block DAG replicates them to the sites of its policy.

Multi-step chains: step k reads the registered outputs of step k-1's done jobs in the same block, once step k-1
is settled there (every one of its jobs done or Problematic), so its groups are whole; a file already read by
one of step k's jobs is never grouped again (a retried job's late output makes its own group), and step k's
outputs keep their input's name with the step's type (:func:`step_output_lfn`). An MC campaign's first step is
a generator (``detsim``): ``mc.jobs`` sub-jobs (× each combination of a parameter splitter) in the block of
``mc.day``, each with the seed :func:`mc_seed` of the campaign and its key, writing :func:`mc_output_lfn`;
their outputs are registered without parents and every later step's with lineage to its input.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

from rawflow.catalogue.base import BlockRecord, Catalogue, ReplicaState
from rawflow.errors import ConfigError
from rawflow.naming import DataType, RawFileName, lfn_for, parse_lfn, split_user_lfn, user_area, user_lfn
from rawflow.planning import plan_block as plan_replication
from rawflow.processing.campaigns import (
    Campaign,
    CampaignError,
    Splitter,
    Step,
    SubJob,
    campaign_files,
    generator_jobs,
    load_campaign,
    split,
)
from rawflow.processing.jobs import JobRecord, JobStore
from rawflow.processing.keepup import KeepupContext, RoundReport, run_keepup_round
from rawflow.processing.planning import GENERATORS, PAYLOAD_VERSIONS, STAGE_TYPES, JobPhase, PlannedJob
from rawflow.replication import replicate_chunk, validate_chunk
from rawflow.sites import SitesConfig
from rawflow.transfer.base import Transfertool
from rawflow.validation import SiteProgress, block_progress

ONE_TO_ONE = ("raw2rtraw", "rec", "elecsim", "cal")
RUNNABLE = (*ONE_TO_ONE, *GENERATORS)
SETTLED = (JobPhase.DONE, JobPhase.PROBLEMATIC)
MC_DAQ, MC_STREAM_TYPE, MC_DEFAULT_GENERATOR = "JUNO", "MC", "ibd"


def campaign_key_prefix(campaign: Campaign) -> str:
    return f"c.{campaign.name[:40]}."


def parameters_tag(parameters: Mapping[str, Any]) -> str:
    """A short stable tag of a parameter combination (pure): ``p`` + 8 hex digits; empty without parameters."""
    if not parameters:
        return ""
    ident = json.dumps(sorted((str(k), str(v)) for k, v in parameters.items()))
    return "p" + hashlib.sha256(ident.encode()).hexdigest()[:8]


def campaign_output_lfn(
    lfn: str,
    data_type: DataType,
    campaign: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    user: str | None = None,
) -> str:
    """The output of ``lfn`` in a campaign (pure): same day and fields, the campaign (and, for a parameter
    split, the combination's :func:`parameters_tag`) in the file tag — each combination its own file. A user
    analysis's outputs go under the user's area, ``/juno/user/<user>/<analysis>/<type>/YYYY/mmdd/``."""
    parsed = parse_lfn(lfn)
    source = parsed.file
    extra = parameters_tag(parameters or {})
    tag = re.sub(r"[^A-Za-z0-9_-]", "-", f"{source.file_tag}_{campaign}" + (f"_{extra}" if extra else ""))
    name = RawFileName.build(
        daq=source.daq,
        run_number=source.run_number,
        stream_type=source.stream_type,
        stream_name=source.stream_name,
        file_tag=tag,
        file_time=source.file_time,
        file_sequence=source.file_sequence,
        data_type=data_type,
    ).name
    standard = lfn_for(data_type, parsed.received, name)
    return user_lfn(user, campaign, standard) if user else standard


def step_output_lfn(lfn: str, data_type: DataType) -> str:
    """The output of a later step of a chain (pure): its input (already the campaign's own file, in the user's
    area for an analysis) with the step's type — the same day, the same seven fields, the type's directory
    and extension."""
    user, analysis, standard = split_user_lfn(lfn)
    parsed = parse_lfn(standard)
    stem = parsed.file.name[: -len(parsed.data_type.extension)]
    made = lfn_for(data_type, parsed.received, stem + data_type.extension)
    return user_lfn(user, analysis, made) if user and analysis else made


def _token(text: str, default: str) -> str:
    token = re.sub(r"[^A-Za-z0-9_-]", "-", text)
    return token if token[:1].isalnum() else default


def mc_output_lfn(campaign: Campaign, step: Step, number: int, parameters: Mapping[str, Any] | None = None) -> str:
    """The file generator sub-job ``number`` of an MC campaign writes (pure): ``JUNO.<run>.MC.<generator>.
    <campaign>[_p<combination>].<day>000000.<number + 1>.<ext>`` in the directory of ``mc.day``."""
    assert campaign.mc is not None
    combo = dict(parameters or {})
    generator = str(combo.get("generator", step.parameters.get("generator", MC_DEFAULT_GENERATOR)))
    extra = parameters_tag(combo)
    output_type = STAGE_TYPES[step.payload][1]
    assert output_type is not None
    day = campaign.mc.day
    name = RawFileName.build(
        daq=MC_DAQ,
        run_number=campaign.mc.run,
        stream_type=MC_STREAM_TYPE,
        stream_name=_token(generator, "sim"),
        file_tag=_token(campaign.name + (f"_{extra}" if extra else ""), "mc"),
        file_time=datetime(day.year, day.month, day.day),
        file_sequence=number + 1,
        data_type=output_type,
    ).name
    return lfn_for(output_type, day, name)


def mc_seed(campaign: str, key: str) -> int:
    """A generator sub-job's seed (pure): from the campaign and the job key, so a resubmission (a retry, a
    re-run) generates the same events, and no two sub-jobs share one. 63 bits."""
    return int.from_bytes(hashlib.sha256(f"{campaign}\n{key}".encode()).digest()[:8], "big") >> 1


def output_user(campaign: Campaign) -> str | None:
    """Whose area the campaign writes into: the user of an analysis; None for production."""
    return campaign.user if campaign.kind == "analysis" and campaign.user else None


def input_block_ready(block: BlockRecord | None, replicas: Mapping[str, Mapping[str, Any]], site: str) -> bool:
    """A block is input once it is closed and every file of it is validated (or archived) at ``site`` (pure)."""
    if block is None or block.is_open or block.files == 0 or len(replicas) != block.files:
        return False
    good = (ReplicaState.VALIDATED, ReplicaState.ARCHIVED)
    return all(site in sites and sites[site].state in good for sites in replicas.values())


def _step_inputs(ctx: KeepupContext, campaign: Campaign, index: int, block_id: str) -> list[str]:
    """Step 0 reads the block's input files; step k the outputs of step k-1's finished jobs."""
    if index == 0:
        assert campaign.input_data_type is not None and campaign.input_site is not None
        block = ctx.catalogue.get_block(campaign.input_data_type, block_id)
        replicas = ctx.catalogue.replica_states(block=(campaign.input_data_type, block_id), site=campaign.input_site)
        if not input_block_ready(block, replicas, campaign.input_site):
            return []
        return [f.lfn for f in ctx.catalogue.files_in_block(campaign.input_data_type, block_id)]
    previous = campaign.steps[index - 1]
    prefix = f"{campaign_key_prefix(campaign)}{previous.name}."
    done = ctx.jobs.list_jobs(block_id=block_id, states=[JobPhase.DONE], key_prefix=prefix)
    return sorted(lfn for record in done for lfn in record.outputs)


def step_campaign(campaign: Campaign, index: int) -> Campaign:
    """The campaign as step ``index`` splits it (pure): a parameter sweep applies to the first step; a later
    step runs once per group of the previous step's outputs (each already one combination's)."""
    if index == 0 or campaign.splitter.by != "parameters":
        return campaign
    return replace(campaign, splitter=Splitter(by="files", files_per_job=campaign.splitter.files_per_job))


def plan_campaign_block(ctx: KeepupContext, campaign: Campaign, block_id: str) -> list[PlannedJob]:
    """Every sub-job the campaign has for ``block_id`` now (pure apart from catalogue/jobs reads). A sub-job of
    N files runs its payload over each (output i from input i, lineage to it alone); its parameters (the step's
    own, then the splitter's combination) go to the payload as ``--param NAME=VALUE``. A step is planned only
    once the step before it is settled in the block (each of its jobs done or Problematic)."""
    planned: list[PlannedJob] = []
    for index, step in enumerate(campaign.steps):
        if step.payload not in RUNNABLE:
            raise ConfigError(
                campaign.source, f"steps[{index}].payload", step.payload, "not runnable in a campaign yet"
            )
        if step.payload in GENERATORS:
            jobs = _generated(campaign, step, block_id)
        elif index == 0:
            inputs = _step_inputs(ctx, campaign, index, block_id)
            subs = [sub for sub in split(step_campaign(campaign, index), step, inputs) if sub.inputs]
            jobs = [_planned(campaign, step, index, sub, block_id) for sub in subs]
        else:
            jobs = _later_step(ctx, campaign, index, block_id)
        planned += jobs
        if index + 1 < len(campaign.steps) and not _settled(ctx, jobs):
            break  # the next step groups this one's outputs once they are all there
    return planned


def _settled(ctx: KeepupContext, jobs: Sequence[PlannedJob]) -> bool:
    """Whether every job is known and done or Problematic (nothing of the step can still change)."""
    known = ctx.jobs.get(job.key for job in jobs) if jobs else {}
    return all(job.key in known and known[job.key].state in SETTLED for job in jobs)


def _later_step(ctx: KeepupContext, campaign: Campaign, index: int, block_id: str) -> list[PlannedJob]:
    """Step ``index`` (> 0): its jobs already known (as they were planned), plus new groups of the previous
    step's registered outputs that none of its jobs reads yet (so no file is processed twice, whatever order
    the outputs came in)."""
    step = campaign.steps[index]
    prefix = f"{campaign_key_prefix(campaign)}{step.name}."
    known = ctx.jobs.list_jobs(block_id=block_id, key_prefix=prefix)
    read = {lfn for record in known for lfn in record.inputs}
    fresh = [lfn for lfn in _step_inputs(ctx, campaign, index, block_id) if lfn not in read]
    subs = [sub for sub in split(step_campaign(campaign, index), step, fresh) if sub.inputs]
    return [record.to_planned() for record in sorted(known, key=lambda r: r.key)] + [
        _planned(campaign, step, index, sub, block_id) for sub in subs
    ]


def _generated(campaign: Campaign, step: Step, block_id: str) -> list[PlannedJob]:
    """An MC campaign's generator sub-jobs (in its block only): each with its seed, event count, run, sequence
    and start time as parameters, so a retry regenerates the same file."""
    if campaign.mc is None or block_id != campaign.mc.block_id:
        return []
    mc = campaign.mc
    midnight = datetime(mc.day.year, mc.day.month, mc.day.day, tzinfo=UTC)
    jobs = []
    for sub in generator_jobs(campaign, step):
        assert sub.number is not None
        combo = dict(sub.parameters)
        start_ns = (int(midnight.timestamp()) + sub.number) * 1_000_000_000
        parameters = {
            **{k: _text(v) for k, v in step.parameters.items()},
            **{k: _text(v) for k, v in combo.items()},
            "seed": str(mc_seed(campaign.name, sub.key)),
            "events": str(mc.events_per_job),
            "run": str(mc.run),
            "sequence": str(sub.number + 1),
            "start_time_ns": str(start_ns),
        }
        jobs.append(
            PlannedJob(
                key=sub.key,
                payload=step.payload,
                version=PAYLOAD_VERSIONS[step.payload],
                inputs=(),
                outputs=(mc_output_lfn(campaign, step, sub.number, combo),),
                block_id=block_id,
                run=mc.run,
                parameters=tuple(sorted(parameters.items())),
            )
        )
    return jobs


def _planned(campaign: Campaign, step: Step, index: int, sub: SubJob, block_id: str) -> PlannedJob:
    output_type = STAGE_TYPES[step.payload][1]
    assert output_type is not None
    combo = dict(sub.parameters)
    parameters = {**{k: _text(v) for k, v in step.parameters.items()}, **{k: _text(v) for k, v in combo.items()}}
    if index == 0:
        outputs = tuple(
            campaign_output_lfn(lfn, output_type, campaign.name, combo, user=output_user(campaign))
            for lfn in sub.inputs
        )
    else:  # the input is already this campaign's own file
        outputs = tuple(step_output_lfn(lfn, output_type) for lfn in sub.inputs)
    return PlannedJob(
        key=sub.key,
        payload=step.payload,
        version=PAYLOAD_VERSIONS[step.payload],
        inputs=sub.inputs,
        outputs=outputs,
        block_id=block_id,
        run=parse_lfn(sub.inputs[0]).file.run_number,
        parameters=tuple(sorted(parameters.items())),
    )


def _text(value: Any) -> str:
    """A parameter value as the payload's command line gets it: booleans as true/false."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def campaign_context(ctx: KeepupContext, campaign: Campaign) -> KeepupContext:
    """``ctx`` turned into this campaign's: its planner and its slice of the jobs table."""
    return KeepupContext(
        catalogue=ctx.catalogue,
        backend=ctx.backend,
        storage=ctx.storage,
        sites=ctx.sites,
        jobs=ctx.jobs,
        batch_size=ctx.batch_size,
        policy=ctx.policy,
        stages=tuple(s.payload for s in campaign.steps),
        clock=ctx.clock,
        planner=lambda c, block_id: plan_campaign_block(c, campaign, block_id),
        key_prefix=campaign_key_prefix(campaign),
    )


def run_campaign(
    ctx: KeepupContext,
    campaign: Campaign,
    *,
    today: date,
    timeout: timedelta = timedelta(minutes=30),
    poll_interval: float = 2.0,
    transfertool: Transfertool | None = None,
) -> dict[str, RoundReport]:
    """Every block of the campaign as of ``today`` through the keep-up loop (CLI, tests, bench); with a
    ``transfertool``, each block's outputs are then replicated to the destination SEs."""
    cctx = campaign_context(ctx, campaign)
    reports = {}
    for block_id in campaign.input_blocks(today):
        reports[block_id] = run_keepup_round(cctx, block_id, timeout=timeout, poll_interval=poll_interval)
        if transfertool is not None:
            replicate_outputs(cctx, campaign, block_id, transfertool)
    return reports


# -- outputs to the destination SEs ----------------------------------------------------------------------------


def campaign_sites(sites: SitesConfig, campaign: Campaign) -> SitesConfig:
    """The site policy for a campaign's outputs (pure): every output to each destination, nothing elsewhere, never
    to tape. The campaign's destinations are its outputs' whole policy: the data type's own section in the sites
    file (keep-up ESD's shares) does not apply to them."""
    wanted = set(campaign.destinations)
    changed = {
        name: replace(site, share=Fraction(1) if name in wanted else Fraction(0)) if site.role == "disk" else site
        for name, site in sites.sites.items()
    }
    return replace(sites, sites=changed, policies={}, data_type=None, to_tape=False)


def campaign_outputs(ctx: KeepupContext, campaign: Campaign, block_id: str) -> list[str]:
    """The registered outputs of the campaign's last step in ``block_id``."""
    prefix = f"{campaign_key_prefix(campaign)}{campaign.steps[-1].name}."
    done = ctx.jobs.list_jobs(block_id=block_id, states=[JobPhase.DONE], key_prefix=prefix)
    return sorted(lfn for record in done for lfn in record.outputs)


def replicate_outputs(
    ctx: KeepupContext, campaign: Campaign, block_id: str, transfertool: Transfertool, *, rounds: int = 3
) -> dict[str, SiteProgress]:
    """Copy the campaign's outputs of ``block_id`` to each destination SE with the existing replication units
    (plan → replicate chunk → validate chunk: checksummed, retried, Problematic with reasons), then return
    Assigned / Processed / Problematic per destination. Idempotent: validated replicas are not planned again."""
    outputs = set(campaign_outputs(ctx, campaign, block_id))
    sites = campaign_sites(ctx.sites, campaign)
    data_type = campaign.output_data_type
    for _ in range(rounds):
        files = [f for f in ctx.catalogue.files_in_block(data_type, block_id) if f.lfn in outputs]
        replicas = ctx.catalogue.replica_states(sorted(outputs))
        plan = plan_replication(
            files, sites, replicas, data_type=data_type.value, block_id=block_id, archive=False, retry=None
        )
        if not plan.chunks:
            break
        for chunk in plan.chunks:
            replicate_chunk(chunk, catalogue=ctx.catalogue, sites=sites, transfertool=transfertool, storage=ctx.storage)
            validate_chunk(chunk, catalogue=ctx.catalogue, sites=sites, storage=ctx.storage)
    files = [f for f in ctx.catalogue.files_in_block(data_type, block_id) if f.lfn in outputs]
    return block_progress(sites, files, ctx.catalogue.replica_states(sorted(outputs)), archive=False)


# -- status (the ProdSys table) ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CampaignStatus:
    name: str
    kind: str
    backend: str
    status: str  # Waiting | Running | Done | Problematic
    files: int  # input files of the first step so far
    processed: int  # input files whose every final output is validated at every destination SE
    jobs: Mapping[str, int] = field(default_factory=dict)  # state → number
    failures: Sequence[tuple[str, str]] = ()  # (key, reason) of Problematic jobs
    outputs: int = 0  # registered outputs of the last step
    replicated: int = 0  # of them, validated at every destination SE
    pending: Mapping[str, int] = field(default_factory=dict)  # destination → outputs not validated there yet
    user: str | None = None  # an analysis's user
    area: str | None = None  # where an analysis's outputs go: /juno/user/<user>/<analysis>

    @property
    def processed_pct(self) -> float:
        """Rounded down to 0.1 %: 1999 of 2000 is 99.9 %, never a rounded-up 100 %."""
        return math.floor(1000 * self.processed / self.files) / 10 if self.files else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "backend": self.backend,
            "status": self.status,
            "files": self.files,
            "processed": self.processed,
            "processed_pct": self.processed_pct,
            "jobs": dict(self.jobs),
            "failures": [{"key": k, "reason": r} for k, r in self.failures],
            "outputs": self.outputs,
            "replicated": self.replicated,
            "pending": dict(self.pending),
            "user": self.user,
            "area": self.area,
        }


def processed_inputs(
    campaign: Campaign, records: Sequence[JobRecord], replicas: Mapping[str, Mapping[str, Any]]
) -> tuple[set[str], set[str]]:
    """(first-step input files fully processed, final outputs validated at every destination) — pure.

    A final output counts once its replica is validated (or archived) at EVERY destination SE, never from a
    job state: a job done whose output is still being copied is not processed. Walking the steps backwards, a
    job is complete when it is done and each of its outputs is complete (for the last step: replicated), and
    a file is complete when every sub-job reading it (each parameter combination, each group) is complete.
    An MC campaign has no input files: its "inputs" are the generator's files, each processed once its job is
    done and every later step's outputs made from it are complete."""
    good_states = (ReplicaState.VALIDATED, ReplicaState.ARCHIVED)
    prefix = campaign_key_prefix(campaign)
    by_step: dict[str, list[JobRecord]] = {s.name: [] for s in campaign.steps}
    for record in records:
        for step in campaign.steps:
            if record.key.startswith(f"{prefix}{step.name}."):
                by_step[step.name].append(record)
                break
    last = campaign.steps[-1].name
    made = {lfn for r in by_step[last] if r.state is JobPhase.DONE for lfn in r.outputs}
    replicated = {
        lfn
        for lfn in made
        if all(
            site in replicas.get(lfn, {}) and replicas[lfn][site].state in good_states for site in campaign.destinations
        )
    }
    complete_files = replicated
    walked = campaign.steps[1:] if campaign.generated else campaign.steps
    for step in reversed(walked):
        readers: dict[str, list[bool]] = {}
        for record in by_step[step.name]:
            done = record.state is JobPhase.DONE and bool(record.outputs)
            done = done and all(lfn in complete_files for lfn in record.outputs)
            for lfn in record.inputs:
                readers.setdefault(lfn, []).append(done)
        complete_files = {lfn for lfn, oks in readers.items() if all(oks)}
    if campaign.generated:  # the generator's files: made (job done) and complete downstream
        first = campaign.steps[0].name
        made_first = {lfn for r in by_step[first] if r.state is JobPhase.DONE for lfn in r.outputs}
        complete_files = made_first & (complete_files if len(campaign.steps) > 1 else replicated)
    return complete_files, replicated


def campaign_status(campaign: Campaign, jobs: JobStore, catalogue: Catalogue) -> CampaignStatus:
    """The campaign's row of the ProdSys table: jobs from the jobs table; Processed from the catalogue — an
    input file is processed once its final outputs are validated at every destination SE."""
    records: list[JobRecord] = jobs.list_jobs(key_prefix=campaign_key_prefix(campaign))
    states: dict[str, int] = {}
    for record in records:
        states[record.state.value] = states.get(record.state.value, 0) + 1
    first, last = campaign.steps[0].name, campaign.steps[-1].name
    prefix = campaign_key_prefix(campaign)
    # Files: the first step's inputs; an MC campaign's, the files its generator makes.
    files = len(
        {
            lfn
            for r in records
            if r.key.startswith(f"{prefix}{first}.")
            for lfn in (r.outputs if campaign.generated else r.inputs)
        }
    )
    made = sorted(
        {lfn for r in records if r.key.startswith(f"{prefix}{last}.") and r.state is JobPhase.DONE for lfn in r.outputs}
    )
    replicas = catalogue.replica_states(made) if made else {}
    processed, replicated = processed_inputs(campaign, records, replicas)
    good = (ReplicaState.VALIDATED, ReplicaState.ARCHIVED)
    pending = {
        site: sum(1 for lfn in made if not (site in replicas.get(lfn, {}) and replicas[lfn][site].state in good))
        for site in campaign.destinations
    }
    failures = tuple((r.key, r.reason or "") for r in records if r.state is JobPhase.PROBLEMATIC)
    if failures:
        status = "Problematic"
    elif not records:
        status = "Waiting"
    elif files and len(processed) == files and not any(r.state.active for r in records):
        status = "Done"  # every input processed: its outputs validated at every destination
    else:
        status = "Running"
    return CampaignStatus(
        name=campaign.name,
        kind=campaign.kind,
        backend=campaign.backend,
        status=status,
        files=files,
        processed=len(processed),
        jobs=states,
        failures=failures,
        outputs=len(made),
        replicated=len(replicated),
        pending=pending,
        user=campaign.user,
        area=user_area(owner, campaign.name) if (owner := output_user(campaign)) else None,
    )


def campaign_output_files(campaign: Campaign, jobs: JobStore, catalogue: Catalogue) -> list[dict[str, Any]]:
    """The registered outputs of the campaign's last step, each with its state at every destination SE (for a
    user's analysis: the files in the user's area)."""
    prefix = f"{campaign_key_prefix(campaign)}{campaign.steps[-1].name}."
    made = sorted({lfn for r in jobs.list_jobs(key_prefix=prefix, states=[JobPhase.DONE]) for lfn in r.outputs})
    replicas = catalogue.replica_states(made) if made else {}
    files = catalogue.get_files(made) if made else {}
    return [
        {
            "lfn": lfn,
            "size": files[lfn].size if lfn in files else None,
            "replicas": {
                site: replicas[lfn][site].state.value if site in replicas.get(lfn, {}) else "missing"
                for site in campaign.destinations
            },
        }
        for lfn in made
    ]


def campaigns_overview(folder: str | Path, jobs: JobStore, catalogue: Catalogue) -> list[dict[str, Any]]:
    """The ProdSys table: one row per steering file of ``folder`` (ID = its position, sorted by file name);
    a file that does not validate is a row with status Invalid and its one-line error."""
    rows: list[dict[str, Any]] = []
    for number, path in enumerate(campaign_files(folder), start=1):
        try:
            campaign = load_campaign(path)
        except CampaignError as exc:
            rows.append({"id": number, "file": path.name, "name": path.stem, "status": "Invalid", "error": str(exc)})
            continue
        row = campaign_status(campaign, jobs, catalogue).to_dict()
        rows.append({"id": number, "file": path.name, "dag_id": campaign.dag_id, "error": None, **row})
    return rows


__all__ = [
    "CampaignStatus",
    "campaign_context",
    "campaign_key_prefix",
    "campaign_output_files",
    "campaign_output_lfn",
    "campaign_status",
    "campaigns_overview",
    "input_block_ready",
    "mc_output_lfn",
    "mc_seed",
    "plan_campaign_block",
    "processed_inputs",
    "run_campaign",
    "step_output_lfn",
]
