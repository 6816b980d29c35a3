"""The keep-up round: RAW → RTRAW → ESD (+ DQM per run) for one receiving day, run-once and idempotent.

:func:`submit_round` plans every stage's missing outputs (catalogue lineage: inputs with no child of the output
type) and submits them in batches; :func:`collect_round` polls the active jobs once, releases/resubmits/retries
by the :class:`~rawflow.processing.planning.RetryPolicy`, checks finished jobs' outputs at the Tier-0 and
registers them with metadata and lineage. The deferrable Airflow operator calls these two around its trigger;
:func:`run_keepup_round` calls them in a bounded loop (CLI, demo, tests, benchmark): one production path.

Idempotence: a job's key is deterministic (payload, version, inputs); each attempt has its own backend key,
recorded as SUBMITTING *before* the backend call, so a crash between submit and bookkeeping resubmits the
same attempt key, which the backend recognises. Registration is the catalogue's idempotent bulk call: a
repeat is ``existing``, never a second file.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rawflow.catalogue.base import BlockClosedError, Catalogue, FileRecord, ReplicaState, utc_now
from rawflow.compute.base import ComputeBackend, ComputeError, JobOutcome, JobState, JobStatus
from rawflow.errors import RawflowError
from rawflow.naming import DataType, derived_lfn
from rawflow.processing.jobs import JobRecord, JobStore
from rawflow.processing.planning import (
    DQM,
    RAW2RTRAW,
    REC,
    STAGE_TYPES,
    STAGES,
    Action,
    JobPhase,
    PlannedJob,
    ReportError,
    RetryPolicy,
    batch_name,
    batches,
    check_output,
    decide,
    due,
    plan_conversions,
    plan_dqm,
    reported_input_events,
    reported_input_events_each,
    reported_outputs,
    stream_of,
)
from rawflow.sites import SitesConfig
from rawflow.storage.base import Storage

log = logging.getLogger(__name__)

MAX_DQM_SUMMARY = 1 << 20  # bytes of a DQM summary read back from the Tier-0
CAMPAIGN_KEY_PREFIX = "c."  # campaign job keys (rawflow.processing.campaigns.sub_job_key)

_PHASE_OF: Mapping[JobState, JobPhase] = {
    JobState.QUEUED: JobPhase.QUEUED,
    JobState.RUNNING: JobPhase.RUNNING,
    JobState.HELD: JobPhase.HELD,
}


@dataclass(slots=True)
class KeepupContext:
    """Everything a round needs; built by the Airflow operator from Connections, or by tests and the CLI."""

    catalogue: Catalogue
    backend: ComputeBackend
    storage: Storage
    sites: SitesConfig
    jobs: JobStore
    batch_size: int = 200
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    stages: tuple[str, ...] = STAGES
    clock: Callable[[], datetime] = utc_now
    # Campaigns reuse the round with their own planner and their own slice of the jobs table (key prefix);
    # keep-up (planner None) owns every job that is not a campaign's.
    planner: Callable[[KeepupContext, str], list[PlannedJob]] | None = None
    key_prefix: str | None = None

    def owns(self, record: JobRecord) -> bool:
        if self.key_prefix is not None:
            return record.key.startswith(self.key_prefix)
        return not record.key.startswith(CAMPAIGN_KEY_PREFIX)

    def active_jobs(self, block_id: str) -> list[JobRecord]:
        return [r for r in self.jobs.active(block_id) if self.owns(r)]

    def url(self, lfn: str) -> str:
        return self.sites.tier0.pfn(lfn)


@dataclass(slots=True)
class RoundReport:
    """What one or more rounds did for a block (counts per payload)."""

    block_id: str
    submitted: dict[str, int] = field(default_factory=dict)
    resubmitted: int = 0
    released: int = 0
    registered: dict[str, int] = field(default_factory=dict)
    problematic: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    active: int = 0
    retry_waiting: int = 0
    next_retry_at: datetime | None = None
    timed_out: bool = False

    def add(self, other: RoundReport) -> None:
        for name, n in other.submitted.items():
            self.submitted[name] = self.submitted.get(name, 0) + n
        for name, n in other.registered.items():
            self.registered[name] = self.registered.get(name, 0) + n
        self.resubmitted += other.resubmitted
        self.released += other.released
        self.problematic.extend(other.problematic)
        self.active, self.retry_waiting, self.next_retry_at = other.active, other.retry_waiting, other.next_retry_at

    @property
    def total_submitted(self) -> int:
        return sum(self.submitted.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "block_id": self.block_id,
            "submitted": dict(self.submitted),
            "resubmitted": self.resubmitted,
            "released": self.released,
            "registered": dict(self.registered),
            "problematic": [{"key": k, "reason": r} for k, r in self.problematic],
            "active": self.active,
            "retry_waiting": self.retry_waiting,
            "next_retry_at": self.next_retry_at.isoformat() if self.next_retry_at else None,
            "timed_out": self.timed_out,
        }


# -- planning against the catalogue --------------------------------------------------------------------------


def plan_block(ctx: KeepupContext, block_id: str) -> list[PlannedJob]:
    """Every job the block still needs, all stages (a file already converted is not selected: lineage)."""
    planned: list[PlannedJob] = []
    if RAW2RTRAW in ctx.stages:
        raws = ctx.catalogue.files_without_children(DataType.RAW, block_id, DataType.RTRAW)
        planned += plan_conversions(RAW2RTRAW, [(f.lfn, f.run_number) for f in raws], block_id=block_id)
    if REC in ctx.stages:
        rtraws = ctx.catalogue.files_without_children(DataType.RTRAW, block_id, DataType.ESD)
        planned += plan_conversions(REC, [(f.lfn, f.run_number) for f in rtraws], block_id=block_id)
    if DQM in ctx.stages:
        converting = [job for job in planned if job.payload == RAW2RTRAW]
        known = ctx.jobs.get(job.key for job in converting)
        # A run waits for its conversions, but not for a file that ended Problematic (it may never convert).
        busy = {
            job.run for job in converting if job.key not in known or known[job.key].state is not JobPhase.PROBLEMATIC
        }
        planned += _plan_dqm(ctx, block_id, busy)
    return planned


def _plan_dqm(ctx: KeepupContext, block_id: str, runs_converting: set[int]) -> list[PlannedJob]:
    """A run's DQM once every RAW file of the run (that day) has its RTRAW; a later file makes a new job."""
    runs: dict[int, list[str]] = defaultdict(list)
    for record in ctx.catalogue.files_in_block(DataType.RTRAW, block_id):
        runs[record.run_number].append(record.lfn)
    ready = {run: lfns for run, lfns in runs.items() if run not in runs_converting}
    return plan_dqm(ready, block_id=block_id)


# -- submission ----------------------------------------------------------------------------------------------


def submit_round(ctx: KeepupContext, block_id: str) -> RoundReport:
    """Plan the block and submit what has no job yet, plus retries whose backoff has passed."""
    report = RoundReport(block_id=block_id)
    planned = (ctx.planner or plan_block)(ctx, block_id)
    known = ctx.jobs.get(job.key for job in planned)
    now = ctx.clock()
    to_submit: list[JobRecord] = []
    for job in planned:
        record = known.get(job.key)
        if record is None:
            record = JobRecord.planned(job, ctx.backend.name).evolve(attempts=1)
        elif record.state is JobPhase.RETRY_WAIT and due(now, record.next_attempt_at):
            record = record.evolve(state=JobPhase.SUBMITTING, attempts=record.attempts + 1, released=False)
        elif record.state is not JobPhase.SUBMITTING:
            continue  # active, done, waiting for its backoff, or Problematic
        to_submit.append(record)
    for record in to_submit:
        report.submitted[record.payload] = report.submitted.get(record.payload, 0) + 1
    _submit(ctx, to_submit)
    _summarise(ctx, block_id, report)
    return report


def _submit(ctx: KeepupContext, records: Sequence[JobRecord]) -> None:
    """Record SUBMITTING, submit in batches (one cluster per payload batch), record the handles."""
    if not records:
        return
    pending = [r if r.state is JobPhase.SUBMITTING else r.evolve(state=JobPhase.SUBMITTING) for r in records]
    ctx.jobs.upsert(pending)
    by_payload: dict[str, list[JobRecord]] = defaultdict(list)
    for record in pending:
        by_payload[record.payload].append(record)
    for payload, group in sorted(by_payload.items()):
        for batch in batches(group, ctx.batch_size):
            specs = [r.to_planned().spec(r.attempts, ctx.url) for r in batch]
            name = batch_name(payload, batch[0].block_id, [s.key for s in specs])
            handles = {h.key: h for h in ctx.backend.submit(specs, batch=name)}
            now = ctx.clock()
            submitted = []
            for record in batch:
                handle = handles.get(record.backend_key)
                if handle is None:
                    continue  # stays SUBMITTING: the next round submits the same attempt key again
                submitted.append(
                    record.evolve(
                        state=JobPhase.QUEUED,
                        backend_id=handle.backend_id,
                        batch=handle.batch,
                        submitted_at=now if handle.new or record.submitted_at is None else record.submitted_at,
                        next_attempt_at=None,
                    )
                )
            ctx.jobs.upsert(submitted)
            log.info("submitted %d %s job(s) as batch %s", len(submitted), payload, name)


# -- collection ----------------------------------------------------------------------------------------------


def collect_round(ctx: KeepupContext, block_id: str) -> RoundReport:
    """Poll the block's active jobs once and act on every one that is no longer queued or running."""
    report = RoundReport(block_id=block_id)
    active = ctx.active_jobs(block_id)
    if not active:
        _summarise(ctx, block_id, report)
        return report
    statuses = ctx.backend.poll([r.backend_key for r in active])
    finished = [r.backend_key for r in active if _state(statuses, r) in (JobState.DONE, JobState.FAILED)]
    outcomes = ctx.backend.collect(finished) if finished else {}
    updates: list[JobRecord] = []
    resubmit: list[JobRecord] = []
    release: list[JobRecord] = []
    cancel: list[str] = []
    checks: list[tuple[JobRecord, JobOutcome]] = []
    for record in active:
        status = statuses.get(record.backend_key) or JobStatus(record.backend_key, None, JobState.MISSING)
        if record.state is JobPhase.SUBMITTING and status.state is JobState.MISSING:
            resubmit.append(record)  # never reached the backend: the same attempt again
            continue
        outcome = outcomes.get(record.backend_key)
        if status.state in (JobState.DONE, JobState.FAILED) and outcome is None:
            continue  # finished between poll and collect: next round
        reason = outcome.reason if outcome is not None else _status_reason(status)
        decision = decide(
            status.state,
            released=record.released,
            failures=record.failures,
            attempts=record.attempts,
            policy=ctx.policy,
            reason=reason,
        )
        facts: dict[str, Any] = {"backend_id": status.backend_id or record.backend_id}
        if outcome is not None:
            facts.update(exit_code=outcome.exit_code, hold_reason=outcome.hold_reason, stderr_tail=outcome.stderr_tail)
        elif status.hold_reason:
            facts.update(hold_reason=status.hold_reason)
        if decision.action is Action.WAIT:
            phase = _PHASE_OF[status.state]
            if phase is not record.state:
                updates.append(record.evolve(state=phase, **facts))
        elif decision.action is Action.RELEASE:
            release.append(record.evolve(state=JobPhase.HELD, released=True, reason=reason, **facts))
        elif decision.action is Action.RESUBMIT:
            if status.state is JobState.HELD:
                cancel.append(record.backend_key)
            resubmit.append(record.evolve(attempts=record.attempts + 1, released=False, reason=reason, **facts))
        elif decision.action is Action.RETRY_LATER:
            updates.append(_retry_later(ctx, record, reason, facts))
        elif decision.action is Action.GIVE_UP:
            if status.state is JobState.HELD:
                cancel.append(record.backend_key)
            failures = record.failures + (1 if status.state is JobState.FAILED else 0)
            updates.append(
                record.evolve(state=JobPhase.PROBLEMATIC, failures=failures, reason=decision.reason, **facts)
            )
            report.problematic.append((record.key, decision.reason))
        else:
            assert outcome is not None
            checks.append((record.evolve(**facts), outcome))
    if release:
        ctx.backend.release([r.backend_key for r in release])
        report.released += len(release)
    if cancel:
        ctx.backend.cancel(cancel)
    updates += release
    updates += _check_and_register(ctx, checks, report)
    ctx.jobs.upsert(updates)
    if resubmit:
        report.resubmitted += len(resubmit)
        _submit(ctx, resubmit)
    _summarise(ctx, block_id, report)
    return report


def _state(statuses: Mapping[str, JobStatus], record: JobRecord) -> JobState:
    status = statuses.get(record.backend_key)
    return status.state if status is not None else JobState.MISSING


def _status_reason(status: JobStatus) -> str:
    if status.hold_reason:
        return f"held: {status.hold_reason}"
    if status.state is JobState.MISSING:
        return "the job vanished from the batch system"
    if status.state is JobState.REMOVED:  # Rawflow removes only jobs it no longer tracks
        return "the job was removed from the batch system, not by Rawflow"
    return status.state.value


def _retry_later(ctx: KeepupContext, record: JobRecord, reason: str, facts: Mapping[str, Any]) -> JobRecord:
    failures = record.failures + 1
    return record.evolve(
        state=JobPhase.RETRY_WAIT,
        failures=failures,
        reason=reason,
        next_attempt_at=ctx.clock() + ctx.policy.delay(failures),
        **facts,
    )


def _fail(ctx: KeepupContext, record: JobRecord, reason: str, report: RoundReport) -> JobRecord:
    """A job that exited 0 but whose outputs do not hold up: a failure like a non-zero exit."""
    decision = decide(
        JobState.FAILED,
        released=record.released,
        failures=record.failures,
        attempts=record.attempts,
        policy=ctx.policy,
        reason=reason,
    )
    if decision.action is Action.GIVE_UP:
        report.problematic.append((record.key, decision.reason))
        return record.evolve(state=JobPhase.PROBLEMATIC, failures=record.failures + 1, reason=decision.reason)
    return _retry_later(ctx, record, reason, {})


def _check_and_register(
    ctx: KeepupContext, checks: Sequence[tuple[JobRecord, JobOutcome]], report: RoundReport
) -> list[JobRecord]:
    """Check each finished job's outputs at the Tier-0 against its report; register the good ones in bulk."""
    updates: list[JobRecord] = []
    good: list[tuple[JobRecord, dict[str, int]]] = []  # record, output lfn → events
    measured: dict[str, tuple[int, str]] = {}  # output lfn → (size, adler32) at the Tier-0
    for record, outcome in checks:
        try:
            reported = reported_outputs(outcome, record.outputs)
            input_events = reported_input_events(outcome) if record.payload != DQM else None
            if not record.inputs:  # a generator (an MC campaign's detsim): it must make the events asked of it
                input_events = _asked_events(record)
            # A one-to-one payload over N files (a campaign's multi-input sub-job): output i ↔ input i.
            each = reported_input_events_each(outcome) if _paired(record) else None
            problem = None
            for lfn, entry in reported.items():
                url = ctx.url(lfn)
                measured[lfn] = (ctx.storage.stat(url).size, ctx.storage.checksum(url))
                expected = input_events
                if _paired(record):
                    index = record.outputs.index(lfn)
                    expected = each[index] if each is not None and len(each) == len(record.outputs) else None
                problem = problem or check_output(
                    entry, size=measured[lfn][0], adler32=measured[lfn][1], input_events=expected
                )
        except (ReportError, RawflowError) as exc:
            problem = f"output check: {exc}"
        if problem is not None:
            updates.append(_fail(ctx, record, problem, report))
            continue
        events = {lfn: entry.events for lfn, entry in reported.items() if entry.events is not None}
        if record.payload == DQM:
            updates.append(_finish_dqm(ctx, record, report))
        else:
            good.append((record, events))
    updates += _register(ctx, good, measured, report)
    return updates


def _asked_events(record: JobRecord) -> int | None:
    """The events a generator job was asked for (its ``events`` parameter; None if it has none)."""
    value = dict(record.parameters).get("events")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _paired(record: JobRecord) -> bool:
    """A one-to-one payload run over several files: output i is made from input i alone."""
    return record.payload != DQM and len(record.inputs) > 1 and len(record.inputs) == len(record.outputs)


def _finish_dqm(ctx: KeepupContext, record: JobRecord, report: RoundReport) -> JobRecord:
    try:
        data = ctx.storage.read_bytes(ctx.url(record.outputs[0]))[:MAX_DQM_SUMMARY]
        summary = json.loads(data)
    except (RawflowError, ValueError) as exc:
        return _fail(ctx, record, f"DQM summary unreadable: {exc}", report)
    report.registered[DQM] = report.registered.get(DQM, 0) + 1
    return record.evolve(state=JobPhase.DONE, reason=None, summary=summary if isinstance(summary, dict) else None)


def _register(
    ctx: KeepupContext,
    good: Sequence[tuple[JobRecord, dict[str, int]]],
    sizes: Mapping[str, tuple[int, str]],
    report: RoundReport,
) -> list[JobRecord]:
    """Register the checked outputs in one bulk call, with the size and adler32 measured at the Tier-0."""
    if not good:
        return []
    parents = ctx.catalogue.get_files(lfn for record, _ in good for lfn in record.inputs)
    now = ctx.clock()
    records: list[FileRecord] = []
    lineage: dict[str, list[str]] = {}
    for record, _ in good:
        if any(lfn not in parents for lfn in record.inputs):
            continue
        _, output_type = STAGE_TYPES[record.payload]
        assert output_type is not None
        for index, lfn in enumerate(record.outputs):
            # Lineage: output i of a paired job comes from input i; otherwise from every input. A generator's
            # output (an MC campaign's detsim) has no parent: its block and run are its job's.
            sources = [record.inputs[index]] if _paired(record) else list(record.inputs)
            if sources:
                parent = parents[sources[0]]
                block_id, run_number, stream = parent.block_id, parent.run_number, parent.stream
            else:
                block_id, run_number, stream = record.block_id, record.run, stream_of(lfn)
            size, adler32 = sizes[lfn]
            records.append(
                FileRecord(
                    lfn=lfn,
                    size=size,
                    adler32=adler32,
                    data_type=output_type,
                    block_id=block_id,
                    run_number=run_number,
                    stream=stream,
                    received_at=now,
                )
            )
            if sources:
                lineage[lfn] = sources
    try:
        result = ctx.catalogue.register_files(
            records, site=ctx.sites.tier0.name, state=ReplicaState.VALIDATED, parents=lineage
        )
    except BlockClosedError as exc:
        # An output block closed before its files were made (a late RAW file): a shifter reopens or decides.
        reason = f"cannot register: {exc}"
        report.problematic.extend((record.key, reason) for record, _ in good)
        return [record.evolve(state=JobPhase.PROBLEMATIC, reason=reason) for record, _ in good]
    conflicts = {lfn: (have, offered) for lfn, have, offered in result.conflicts}
    registered = set(result.added) | set(result.existing)
    updates = []
    for record, events in good:
        unknown = next((lfn for lfn in record.inputs if lfn not in parents), None)
        if unknown is not None:
            updates.append(_fail(ctx, record, f"input {unknown} is not in the catalogue", report))
            continue
        clash = next((lfn for lfn in record.outputs if lfn in conflicts), None)
        if clash is not None:
            reason = f"{clash} is catalogued with adler32 {conflicts[clash][0]}, the job wrote {conflicts[clash][1]}"
            report.problematic.append((record.key, reason))
            updates.append(record.evolve(state=JobPhase.PROBLEMATIC, reason=reason))
            continue
        if all(lfn in registered for lfn in record.outputs):
            total = sum(events.values()) if events else None
            updates.append(record.evolve(state=JobPhase.DONE, reason=None, events=total))
            report.registered[record.payload] = report.registered.get(record.payload, 0) + 1
    return updates


def _summarise(ctx: KeepupContext, block_id: str, report: RoundReport) -> None:
    waiting = [r for r in ctx.jobs.list_jobs(block_id=block_id, states=[JobPhase.RETRY_WAIT]) if ctx.owns(r)]
    report.active = len(ctx.active_jobs(block_id))
    report.retry_waiting = len(waiting)
    times = [r.next_attempt_at for r in waiting if r.next_attempt_at is not None]
    report.next_retry_at = min(times) if times else None


# -- the bounded loop ----------------------------------------------------------------------------------------


def run_keepup_round(
    ctx: KeepupContext,
    block_id: str,
    *,
    timeout: timedelta = timedelta(minutes=30),
    poll_interval: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> RoundReport:
    """Submit, poll, collect and go on to the next stage until the block needs nothing more (or ``timeout``):
    the whole keep-up of one day in one call. Re-running it over a processed day submits 0 jobs."""
    total = RoundReport(block_id=block_id)
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        submitted = submit_round(ctx, block_id)
        total.add(submitted)
        collected = collect_round(ctx, block_id)
        total.add(collected)
        progress = submitted.total_submitted or collected.registered or collected.resubmitted or collected.problematic
        if not collected.active and not collected.retry_waiting and not progress:
            return total
        if time.monotonic() >= deadline:
            total.timed_out = True
            log.warning("keep-up of %s stopped after %s with %d job(s) active", block_id, timeout, collected.active)
            return total
        wait = poll_interval
        if not collected.active and collected.next_retry_at is not None:
            wait = max(poll_interval, (collected.next_retry_at - ctx.clock()).total_seconds())
        if progress and collected.active == 0:
            continue  # the next stage may be ready now
        sleep(min(wait, max(deadline - time.monotonic(), 0.0)))


def catch_up_blocks(catalogue: Catalogue, *, days: int = 7, today: datetime | None = None) -> list[str]:
    """The RAW blocks of the last ``days`` receiving days (the periodic catch-up's work list), oldest first."""
    today = today or utc_now()
    first = f"{today - timedelta(days=days - 1):%Y%m%d}"
    return sorted(b.block_id for b in catalogue.list_blocks(DataType.RAW) if b.block_id >= first)


def expected_outputs(lfns: Iterable[str], data_type: DataType) -> list[str]:
    return [derived_lfn(lfn, data_type) for lfn in lfns]


__all__ = [
    "ComputeError",
    "KeepupContext",
    "RoundReport",
    "catch_up_blocks",
    "collect_round",
    "plan_block",
    "run_keepup_round",
    "submit_round",
]


def retry_jobs(store: JobStore, keys: Iterable[str]) -> list[str]:
    """Give Problematic jobs a fresh start (`rawflow jobs retry`): the next keep-up round submits a new attempt.
    Returns the keys that were reset; a key that is not Problematic is left alone."""
    reset = []
    for record in store.get(keys).values():
        if record.state is JobPhase.PROBLEMATIC:
            reset.append(
                record.evolve(state=JobPhase.RETRY_WAIT, failures=0, next_attempt_at=None, reason="retry requested")
            )
    store.upsert(reset)
    return sorted(r.key for r in reset)
