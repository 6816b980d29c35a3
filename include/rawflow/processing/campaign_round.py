"""A campaign's rounds: the keep-up round machinery (jobs table, batches, retries, output checks, registration
with lineage) with a campaign's planner and its own slice of the jobs table (key prefix ``c.<name>.``).

Data-driven start: a step runs for an input block once that block is complete where the campaign reads it
(:func:`input_block_ready`: closed, every file validated or archived at the input site); blocks of an open
date range join as the days come. Sub-job keys are campaign + step + input LFNs, so a block, a re-run or a
second DAG run never submits the same work twice, and adding a day to the range processes only that day.

Outputs are named after their input with the campaign in the file tag (:func:`campaign_output_lfn`), so a
re-reconstruction never collides with keep-up's own ESD, and are registered at the Tier-0 with lineage; their
data type's block DAG replicates them to the sites of its policy.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

from rawflow.catalogue.base import BlockRecord, Catalogue, ReplicaState
from rawflow.errors import ConfigError
from rawflow.naming import DataType, RawFileName, lfn_for, parse_lfn, user_area, user_lfn
from rawflow.planning import plan_block as plan_replication
from rawflow.processing.campaigns import (
    Campaign,
    CampaignError,
    Splitter,
    Step,
    campaign_files,
    load_campaign,
    split,
)
from rawflow.processing.jobs import JobRecord, JobStore
from rawflow.processing.keepup import KeepupContext, RoundReport, run_keepup_round
from rawflow.processing.planning import PAYLOAD_VERSIONS, STAGE_TYPES, JobPhase, PlannedJob
from rawflow.replication import replicate_chunk, validate_chunk
from rawflow.sites import SitesConfig
from rawflow.transfer.base import Transfertool
from rawflow.validation import SiteProgress, block_progress

ONE_TO_ONE = ("raw2rtraw", "rec")


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
    own, then the splitter's combination) go to the payload as ``--param NAME=VALUE``."""
    planned: list[PlannedJob] = []
    for index, step in enumerate(campaign.steps):
        if step.payload not in ONE_TO_ONE:
            raise ConfigError(
                campaign.source, f"steps[{index}].payload", step.payload, "not runnable in a campaign yet"
            )
        inputs = _step_inputs(ctx, campaign, index, block_id)
        for sub in split(step_campaign(campaign, index), step, inputs):
            if not sub.inputs:
                continue
            planned.append(_planned(campaign, step, sub.key, sub.inputs, dict(sub.parameters), block_id))
    return planned


def _planned(
    campaign: Campaign, step: Step, key: str, lfns: Sequence[str], combo: Mapping[str, Any], block_id: str
) -> PlannedJob:
    output_type = STAGE_TYPES[step.payload][1]
    assert output_type is not None
    parameters = {**{k: _text(v) for k, v in step.parameters.items()}, **{k: _text(v) for k, v in combo.items()}}
    return PlannedJob(
        key=key,
        payload=step.payload,
        version=PAYLOAD_VERSIONS[step.payload],
        inputs=tuple(lfns),
        outputs=tuple(
            campaign_output_lfn(lfn, output_type, campaign.name, combo, user=output_user(campaign)) for lfn in lfns
        ),
        block_id=block_id,
        run=parse_lfn(lfns[0]).file.run_number,
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
    a file is complete when every sub-job reading it (each parameter combination, each group) is complete."""
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
    for step in reversed(campaign.steps):
        readers: dict[str, list[bool]] = {}
        for record in by_step[step.name]:
            done = record.state is JobPhase.DONE and bool(record.outputs)
            done = done and all(lfn in complete_files for lfn in record.outputs)
            for lfn in record.inputs:
                readers.setdefault(lfn, []).append(done)
        complete_files = {lfn for lfn, oks in readers.items() if all(oks)}
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
    files = len({lfn for r in records if r.key.startswith(f"{prefix}{first}.") for lfn in r.inputs})
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
    "plan_campaign_block",
    "processed_inputs",
    "run_campaign",
]
