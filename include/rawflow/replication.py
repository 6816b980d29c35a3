"""Run-once replication units, the steps Airflow tasks call: plan a block, replicate / archive / validate a
chunk, poll the archive. Each unit is idempotent: running it again after a success changes nothing and moves
no bytes (planning skips validated replicas; copies skip destinations that already hold the right file; FTS
jobs have deterministic ids).

Replica states in the catalogue: COPYING before a transfer (which counts an attempt), VALIDATED or BAD (with
the reason) after it, and for the tape site ARCHIVED once the tape endpoint reports the file on tape.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from rawflow import planning
from rawflow.archive import ArchivePoll, poll_tape
from rawflow.catalogue import Catalogue, FileRecord, ReplicaInfo, ReplicaState
from rawflow.catalogue.base import utc_now
from rawflow.errors import PermanentError, StorageError, StorageNotFoundError, TransientError
from rawflow.naming import DataType
from rawflow.planning import BlockPlan, Chunk, ChunkKind, ChunkLimits, PlannedFile, RetryPolicy
from rawflow.sites import SitesConfig
from rawflow.storage.base import Storage
from rawflow.transfer.base import FileState, JobStatus, TransferFile, TransferJob, Transfertool
from rawflow.validation import MISSING, SiteProgress, block_progress, check_replica, site_progress
from rawflow.verify import site_reachable, verify_site

if TYPE_CHECKING:
    from rawflow.processing.closing import CloseDecision

log = logging.getLogger(__name__)

DEFAULT_MAX_SOURCES = 3
DEFAULT_MAX_FILES_PER_JOB = 200


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """What one replicate/archive run did. ``failed``: LFN → reason; ``transient``: LFNs that may pass."""

    key: str
    site: str
    kind: str
    files: int
    copied: int = 0
    skipped: int = 0
    bytes: int = 0
    failed: Mapping[str, str] = field(default_factory=dict)
    transient: tuple[str, ...] = ()
    job_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "site": self.site,
            "kind": self.kind,
            "files": self.files,
            "copied": self.copied,
            "skipped": self.skipped,
            "bytes": self.bytes,
            "failed": dict(self.failed),
            "transient": list(self.transient),
            "job_ids": list(self.job_ids),
        }


@dataclass(frozen=True, slots=True)
class SubmittedChunk:
    """A chunk handed to a transfer backend: poll ``job_ids`` with :func:`collect_chunk`."""

    chunk: Chunk
    job_ids: tuple[str, ...]
    already_there: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk": self.chunk.to_dict(),
            "job_ids": list(self.job_ids),
            "already_there": list(self.already_there),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SubmittedChunk:
        return cls(
            Chunk.from_dict(raw["chunk"]),
            tuple(str(j) for j in raw["job_ids"]),
            tuple(str(lfn) for lfn in raw.get("already_there", ())),
        )


@dataclass(frozen=True, slots=True)
class ValidationResult:
    key: str
    site: str
    good: int
    bad: Mapping[str, str] = field(default_factory=dict)
    unreachable: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "site": self.site,
            "good": self.good,
            "bad": dict(self.bad),
            "unreachable": dict(self.unreachable),
        }


# -- planning -------------------------------------------------------------------------------------------------


def plan_block(
    catalogue: Catalogue,
    sites: SitesConfig,
    data_type: DataType | str,
    block_id: str,
    *,
    multihop: bool = False,
    archive: bool = True,
    only: Iterable[str] | None = None,
    limits: ChunkLimits | None = None,
    retry: RetryPolicy | None = None,
    now: datetime | None = None,
) -> BlockPlan:
    """The block's plan from the catalogue's view of its files and replicas."""
    kind = DataType.parse(data_type)
    files = catalogue.files_in_block(kind, block_id)
    replicas = catalogue.replica_states(block=(kind, block_id))
    return planning.plan_block(
        files,
        sites,
        replicas,
        data_type=kind.value,
        block_id=block_id,
        only=only,
        archive=archive,
        limits=limits,
        retry=retry,
        multihop=multihop,
        now=now or utc_now(),
    )


def block_status(
    catalogue: Catalogue,
    sites: SitesConfig,
    data_type: DataType | str,
    block_id: str,
    *,
    retry: RetryPolicy | None = None,
    archive: bool = True,
) -> dict[str, SiteProgress]:
    """Assigned / Processed / Problematic per target site."""
    kind = DataType.parse(data_type)
    files = catalogue.files_in_block(kind, block_id)
    replicas = catalogue.replica_states(block=(kind, block_id))
    return block_progress(sites, files, replicas, retry, archive=archive, data_type=kind.value)


# -- transfers ------------------------------------------------------------------------------------------------


def _sub_key(key: str, part: str) -> str:
    return f"{key}-{hashlib.sha256(part.encode()).hexdigest()[:12]}"


def jobs_for_chunk(
    chunk: Chunk,
    sites: SitesConfig,
    *,
    max_sources: int = DEFAULT_MAX_SOURCES,
    max_files_per_job: int = DEFAULT_MAX_FILES_PER_JOB,
) -> list[TransferJob]:
    """Transfer jobs for a chunk: single-source files in bulk jobs; a multi-source or multihop file per job."""
    destination = sites[chunk.site]
    bulk: list[TransferFile] = []
    jobs: list[TransferJob] = []
    metadata = {"block": f"{chunk.data_type}-{chunk.block_id}", "site": chunk.site, "chunk": chunk.key}
    for f in chunk.files:
        transfer = TransferFile(
            lfn=f.lfn,
            sources=tuple(sites[s].pfn(f.lfn) for s in f.sources[: max(1, max_sources)]),
            destination=destination.pfn(f.lfn),
            size=f.size,
            adler32=f.adler32,
            hops=tuple(sites[h].pfn(f.lfn) for h in f.hops),
        )
        if transfer.hops or len(transfer.sources) > 1:
            jobs.append(TransferJob(_sub_key(chunk.key, f.lfn), (transfer,), metadata=metadata))
        else:
            bulk.append(transfer)
    for n, start in enumerate(range(0, len(bulk), max_files_per_job)):
        key = chunk.key if n == 0 else _sub_key(chunk.key, f"part-{n}")
        jobs.insert(n, TransferJob(key, tuple(bulk[start : start + max_files_per_job]), metadata=metadata))
    return jobs


def submit_chunk(
    chunk: Chunk,
    *,
    catalogue: Catalogue,
    sites: SitesConfig,
    transfertool: Transfertool,
    storage: Storage,
    max_sources: int = DEFAULT_MAX_SOURCES,
) -> SubmittedChunk:
    """Mark the chunk's replicas COPYING and hand its jobs to the backend.

    A destination the catalogue knows is BAD is removed first: its server may still vouch for a file that was
    corrupted on disk. For a backend that does not skip destinations itself (FTS without overwrite), the other
    destinations are checked here: the right size and adler32 → VALIDATED at once, anything else → removed.
    """
    destination = sites[chunk.site]
    states = catalogue.replica_states(chunk.lfns, site=chunk.site)
    known_bad = {lfn for lfn in chunk.lfns if _state_at(states.get(lfn, {}), chunk.site) is ReplicaState.BAD}
    for lfn in sorted(known_bad):
        _remove_quietly(storage, destination.pfn(lfn))
    todo: list[PlannedFile] = []
    already: list[str] = []
    for f in chunk.files:
        if f.lfn in known_bad or transfertool.prechecks_destinations:
            todo.append(f)
            continue
        check = check_replica(storage, destination.pfn(f.lfn), f)
        if check.ok:
            already.append(f.lfn)
            continue
        if not check.transient and check.reason != MISSING:
            _remove_quietly(storage, destination.pfn(f.lfn))
        todo.append(f)
    if already:
        catalogue.set_replica_state(already, chunk.site, ReplicaState.VALIDATED)
    if not todo:
        return SubmittedChunk(chunk, (), tuple(already))
    catalogue.set_replica_state([f.lfn for f in todo], chunk.site, ReplicaState.COPYING)
    remaining = Chunk(chunk.data_type, chunk.block_id, chunk.site, chunk.kind, chunk.index, tuple(todo))
    jobs = jobs_for_chunk(remaining, sites, max_sources=max_sources)
    job_ids = transfertool.submit(jobs)
    log.info("chunk %s → %s: %d files in %d jobs", chunk.key, chunk.site, len(todo), len(jobs))
    return SubmittedChunk(chunk, tuple(job_ids), tuple(already))


def collect_chunk(submitted: SubmittedChunk, *, catalogue: Catalogue, transfertool: Transfertool) -> ChunkResult | None:
    """The chunk's result once every job is over (replica states updated), else None: poll again later."""
    chunk = submitted.chunk
    statuses: dict[str, JobStatus] = transfertool.poll(submitted.job_ids) if submitted.job_ids else {}
    if any(not statuses[j].terminal for j in submitted.job_ids):
        return None
    good: list[str] = list(submitted.already_there)
    failed: dict[str, str] = {}
    transient: list[str] = []
    copied = skipped = moved = 0
    skipped += len(submitted.already_there)
    sizes = {f.lfn: f.size for f in chunk.files}
    for job_id in submitted.job_ids:
        for f in statuses[job_id].files:
            if f.state is FileState.FINISHED:
                good.append(f.lfn)
                skipped += f.skipped
                copied += not f.skipped
                # FTS's status query carries no byte counts: a finished copy moved the whole file.
                moved += f.bytes or (0 if f.skipped else sizes.get(f.lfn, 0))
            else:
                failed[f.lfn] = f.reason or f.state.value.lower()
                if f.transient:
                    transient.append(f.lfn)
    planned = set(chunk.lfns)
    unreported = planned - set(good) - set(failed)
    for lfn in unreported:
        failed[lfn] = "the transfer backend did not report this file"
    if good:
        catalogue.set_replica_state([lfn for lfn in good if lfn in planned], chunk.site, ReplicaState.VALIDATED)
    for reason, lfns in _group_by_reason(failed).items():
        catalogue.set_replica_state(lfns, chunk.site, ReplicaState.BAD, error=reason)
    return ChunkResult(
        key=chunk.key,
        site=chunk.site,
        kind=chunk.kind.value,
        files=len(chunk.files),
        copied=copied,
        skipped=skipped,
        bytes=moved,
        failed=failed,
        transient=tuple(sorted(transient)),
        job_ids=submitted.job_ids,
    )


def replicate_chunk(
    chunk: Chunk | Mapping[str, Any],
    *,
    catalogue: Catalogue,
    sites: SitesConfig,
    transfertool: Transfertool,
    storage: Storage,
    max_sources: int = DEFAULT_MAX_SOURCES,
    poll_interval: float = 2.0,
    timeout: float = 6 * 3600.0,
    raise_on_transient: bool = False,
) -> ChunkResult:
    """Copy a chunk's files to its site and record the outcome. Raises TransientError if the jobs outlast
    ``timeout``, or (``raise_on_transient``) if some files failed for a reason that may pass (site down)."""
    chunk = chunk if isinstance(chunk, Chunk) else Chunk.from_dict(chunk)
    submitted = submit_chunk(
        chunk, catalogue=catalogue, sites=sites, transfertool=transfertool, storage=storage, max_sources=max_sources
    )
    deadline = time.monotonic() + timeout
    while True:
        result = collect_chunk(submitted, catalogue=catalogue, transfertool=transfertool)
        if result is not None:
            break
        if time.monotonic() > deadline:
            raise TransientError(f"chunk {chunk.key}: transfer jobs still running after {timeout:.0f} s")
        time.sleep(poll_interval)
    log.info(
        "chunk %s → %s: %d copied, %d skipped, %d failed, %d bytes",
        chunk.key,
        chunk.site,
        result.copied,
        result.skipped,
        len(result.failed),
        result.bytes,
    )
    if raise_on_transient and result.transient:
        example = result.failed[result.transient[0]]
        raise TransientError(f"chunk {chunk.key}: {len(result.transient)} files failed transiently, e.g. {example}")
    return result


def archive_chunk(
    chunk: Chunk | Mapping[str, Any],
    *,
    catalogue: Catalogue,
    sites: SitesConfig,
    transfertool: Transfertool,
    storage: Storage,
    poll_interval: float = 2.0,
    timeout: float = 6 * 3600.0,
    raise_on_transient: bool = False,
) -> ChunkResult:
    """Copy a chunk to the tape site's buffer; the tape replica becomes VALIDATED (ARCHIVED after migration)."""
    chunk = chunk if isinstance(chunk, Chunk) else Chunk.from_dict(chunk)
    if chunk.kind is not ChunkKind.ARCHIVE or chunk.site != sites.archive.name:
        raise PermanentError(f"chunk {chunk.key} is not an archive chunk for {sites.archive.name}")
    return replicate_chunk(
        chunk,
        catalogue=catalogue,
        sites=sites,
        transfertool=transfertool,
        storage=storage,
        poll_interval=poll_interval,
        timeout=timeout,
        raise_on_transient=raise_on_transient,
    )


# -- validation -----------------------------------------------------------------------------------------------


def validate_chunk(
    chunk: Chunk | Mapping[str, Any],
    *,
    catalogue: Catalogue,
    sites: SitesConfig,
    storage: Storage,
    read_back: bool = False,
) -> ValidationResult:
    """Check every replica of the chunk at its site against the catalogue: good → VALIDATED, else BAD.

    An ARCHIVED tape replica stays ARCHIVED when good; a replica whose site cannot be reached keeps its state,
    and one already BAD keeps its reason.
    """
    chunk = chunk if isinstance(chunk, Chunk) else Chunk.from_dict(chunk)
    site = sites[chunk.site]
    records: dict[str, FileRecord] = catalogue.get_files(chunk.lfns)
    states = catalogue.replica_states(chunk.lfns, site=site.name)
    good: list[str] = []
    bad: dict[str, str] = {}
    unreachable: dict[str, str] = {}
    for lfn in chunk.lfns:
        record = records.get(lfn)
        if record is None:
            bad[lfn] = "not in the catalogue"
            continue
        check = check_replica(storage, site.pfn(lfn), record, read_back=read_back)
        if check.ok:
            good.append(lfn)
        elif check.transient:
            unreachable[lfn] = check.reason or "unreachable"
        else:
            bad[lfn] = check.reason or "bad replica"
    archived = {lfn for lfn, by_site in states.items() if _state_at(by_site, site.name) is ReplicaState.ARCHIVED}
    to_validate = [lfn for lfn in good if lfn not in archived]
    if to_validate:
        catalogue.set_replica_state(to_validate, site.name, ReplicaState.VALIDATED)
    # A replica already BAD keeps the reason its transfer failed with (more telling than "missing").
    newly_bad = {
        k: v for k, v in bad.items() if k in records and _state_at(states.get(k, {}), site.name) is not ReplicaState.BAD
    }
    for reason, lfns in _group_by_reason(newly_bad).items():
        catalogue.set_replica_state(lfns, site.name, ReplicaState.BAD, error=reason)
    return ValidationResult(chunk.key, site.name, len(good), bad, unreachable)


# -- archive --------------------------------------------------------------------------------------------------


def poll_archive(
    *,
    catalogue: Catalogue,
    sites: SitesConfig,
    storage: Storage,
    data_type: DataType | str,
    block_id: str,
) -> ArchivePoll:
    """Ask the tape endpoint about the block's files waiting for migration; mark the ones on tape ARCHIVED.

    Run it in a worker (it calls gfal2); a deferrable trigger only sleeps between calls until ``done``.
    A file the endpoint reports as failed becomes BAD, so the next plan archives it again.
    """
    kind = DataType.parse(data_type)
    tape = sites.archive
    states = catalogue.replica_states(block=(kind, block_id), site=tape.name)
    waiting = sorted(lfn for lfn, by_site in states.items() if _state_at(by_site, tape.name) is ReplicaState.VALIDATED)
    result = poll_tape(storage, tape, waiting)
    if result.archived:
        catalogue.set_replica_state(result.archived, tape.name, ReplicaState.ARCHIVED)
    for reason, lfns in _group_by_reason(dict(result.failed)).items():
        catalogue.set_replica_state(lfns, tape.name, ReplicaState.BAD, error=f"archiving failed: {reason}")
    return result


# -- one round of one site: the unit the block operator runs -------------------------------------------------


class RoundOutcome(enum.StrEnum):
    DONE = "done"  # the block is closed and nothing is pending: the site is finished
    PROBLEMATIC = "problematic"  # closed, nothing pending, some files gave up: fail with the reasons
    WAIT = "wait"  # sleep until the block changes or ``wake_at``
    WAIT_FTS = "wait_fts"  # sleep until the submitted FTS jobs are over, then collect them


@dataclass(frozen=True, slots=True)
class RoundSettings:
    """What a site's rounds need to know besides the clients. ``close_at``: None never closes (tools, tests)."""

    site: str
    data_type: DataType
    block_id: str
    close_at: datetime | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    multihop: bool = False
    limits: ChunkLimits | None = None
    recheck_seconds: float = 30.0
    archive_poll_seconds: float = 5.0
    chunk_parallel: int = 4  # a site's chunks copied at the same time
    # A derived block held open past ``close_at`` (its parent is open, keep-up still owes files) is asked again
    # after this long (sooner when its own files change: the block trigger wakes the round).
    close_recheck_seconds: float = 60.0

    @property
    def block(self) -> str:
        return f"{self.data_type.value}-{self.block_id}"


@dataclass(frozen=True, slots=True)
class RoundResult:
    """What the round found and what the caller should do next."""

    outcome: RoundOutcome
    progress: SiteProgress
    bytes_at_site: int
    totals: Mapping[str, Any]
    known_files: int
    known_open: bool
    wake_at: datetime | None = None
    submitted: tuple[SubmittedChunk, ...] = ()
    chunks: tuple[ChunkResult, ...] = ()
    message: str = ""

    @property
    def job_ids(self) -> list[str]:
        return [j for sub in self.submitted for j in sub.job_ids]

    def summary(self, block: str, max_reasons: int = 20) -> dict[str, Any]:
        summary: dict[str, Any] = {**self.progress.to_dict(), **self.totals, "block": block}
        summary["reasons"] = dict(list(self.progress.reasons.items())[:max_reasons])
        summary["bytes_at_site"] = self.bytes_at_site
        return summary


ProgressSink = Callable[[SiteProgress, int], None]
CloseGate = Callable[[datetime], "CloseDecision"]
"""Asked once a block is due to close: may it close now? (``rawflow.processing.closing.derived_close``)"""


def site_snapshot(
    catalogue: Catalogue, sites: SitesConfig, data_type: DataType, block_id: str, site: str, retry: RetryPolicy
) -> tuple[SiteProgress, int]:
    """The site's progress and the bytes it holds (validated or archived), straight from the catalogue."""
    sites = sites.for_type(data_type)
    files = catalogue.files_in_block(data_type, block_id)
    replicas = catalogue.replica_states(block=(data_type, block_id), site=site)
    progress = site_progress(sites[site], files, replicas, retry)
    held = (ReplicaState.VALIDATED, ReplicaState.ARCHIVED)
    sizes = {f.lfn: f.size for f in files}
    at_site = sum(
        sizes.get(lfn, 0) for lfn, by_site in replicas.items() if site in by_site and by_site[site].state in held
    )
    return progress, at_site


def _new_totals(totals: Mapping[str, Any] | None, now: datetime) -> dict[str, Any]:
    fresh: dict[str, Any] = {"rounds": 0, "copied": 0, "skipped": 0, "bytes": 0, "failed": 0}
    fresh.update(totals or {})
    fresh.setdefault("started_at", now.isoformat())
    fresh["rounds"] += 1
    return fresh


def _chunk_done(totals: dict[str, Any], publish: Callable[[], object], result: ChunkResult) -> None:
    _count(result, totals)
    publish()


def _count(result: ChunkResult, totals: dict[str, Any]) -> None:
    totals["copied"] += result.copied
    totals["skipped"] += result.skipped
    totals["bytes"] += result.bytes
    totals["failed"] += len(result.failed)
    for lfn, reason in list(result.failed.items())[:5]:
        log.warning("%r → %s failed: %s", lfn, result.site, reason)


def run_site_round(
    settings: RoundSettings,
    *,
    catalogue: Catalogue,
    sites: SitesConfig,
    storage: Storage,
    transfertool: Callable[[], Transfertool],
    totals: Mapping[str, Any] | None = None,
    submitted: Sequence[SubmittedChunk] | None = None,
    record: ProgressSink | None = None,
    reconcile: Callable[[], object] | None = None,
    close_gate: CloseGate | None = None,
    now: datetime | None = None,
) -> RoundResult:
    """One replication round of a block at one site: close check, plan, reachability probe, copy (or FTS
    submit / collect), archive poll, verification after close. Progress goes to ``record`` after the plan and
    after every chunk, so what shifters see is never more than one chunk behind the catalogue.

    ``transfertool`` is called only when there is something to copy. ``submitted``: FTS chunks of the
    previous round whose jobs are over (collect and validate them instead of planning new copies).
    ``reconcile``: registers files the Tier-0 holds but the catalogue lacks; run before the block closes.
    ``close_gate``: asked once the block is due to close (a derived block: its parent closed and keep-up done,
    or the bound passed); while it says no, the block stays open and the round looks again after
    ``settings.close_recheck_seconds``.
    """
    now = now or utc_now()
    totals_now = _new_totals(totals, now)
    kind = settings.data_type
    # The block's type decides its targets and shares (ESD: fewer sites, no tape).
    sites = sites.for_type(kind)
    site = sites[settings.site]
    if site.name not in {s.name for s in planning.targets(sites)}:
        raise PermanentError(f"{site.name} is not a target of {kind.value} blocks (config policies.{kind.value})")
    lock = threading.Lock()

    def publish() -> tuple[SiteProgress, int]:
        progress, held = site_snapshot(catalogue, sites, kind, settings.block_id, site.name, settings.retry)
        if record is not None:
            with lock:
                try:
                    record(progress, held)
                except Exception as exc:  # monitoring never fails a transfer
                    log.warning("could not record progress of %s at %s: %s", settings.block, site.name, exc)
        return progress, held

    block = catalogue.get_block(kind, settings.block_id)
    due = settings.close_at is not None and now >= settings.close_at
    held_open: CloseDecision | None = None
    if due and close_gate is not None and (block is None or block.is_open):
        # A derived block waits for its parent block and for keep-up (bounded): see processing/closing.py.
        decision = close_gate(now)
        if decision.close:
            if decision.forced:
                log.warning("%s: %s; missing e.g. %s", settings.block, decision.reason, dict(decision.missing))
                totals_now["closed_without"] = {"count": decision.missing_count, "files": dict(decision.missing)}
        else:
            held_open = decision
            totals_now["close_held"] = decision.reason
            log.info("%s stays open: %s", settings.block, decision.reason)
    if held_open is None:
        totals_now.pop("close_held", None)
    if block is not None and block.is_open and due and held_open is None:
        if reconcile is not None:
            # Announcements the broker lost are registered before the block closes, never after.
            reconcile()
        catalogue.close_block(kind, settings.block_id)
        log.info("block %s closed (end of day + grace passed)", settings.block)
        block = catalogue.get_block(kind, settings.block_id)
    # A block nobody registered a file into by its closing time is empty and closed.
    closed = (block is not None and not block.is_open) or (block is None and due and held_open is None)

    plan = plan_block(
        catalogue,
        sites,
        kind,
        settings.block_id,
        only=[site.name],
        multihop=settings.multihop,
        retry=settings.retry,
        limits=settings.limits,
        now=now,
    )
    site_plan = plan.site(site.name)
    publish()  # before copying: the files just planned show as pending at once
    reachable, why = site_reachable(storage, site) if site_plan.chunks or submitted else (True, None)
    results: list[ChunkResult] = []
    if submitted is not None:
        tool = transfertool()
        for sub in submitted:
            result = collect_chunk(sub, catalogue=catalogue, transfertool=tool)
            if result is None:  # the trigger saw them finish; a job still running here is a backend bug
                raise TransientError(f"chunk {sub.chunk.key}: FTS3 jobs {list(sub.job_ids)} not finished")
            validate_chunk(sub.chunk, catalogue=catalogue, sites=sites, storage=storage)
            _count(result, totals_now)
            results.append(result)
            publish()
    elif not reachable:
        # An outage is waited out; it must not use up the files' transfer attempts.
        log.warning("%s unreachable, %d files wait: %s", site.name, site_plan.planned, why)
    elif site_plan.chunks:
        tool = transfertool()
        log.info(
            "round %d: %d chunks, %d files to %s via %s",
            totals_now["rounds"],
            len(site_plan.chunks),
            site_plan.planned,
            site.name,
            tool.name,
        )
        if tool.name == "fts3":
            jobs = [
                submit_chunk(c, catalogue=catalogue, sites=sites, transfertool=tool, storage=storage)
                for c in site_plan.chunks
            ]
            if any(sub.job_ids for sub in jobs):
                progress, held = publish()
                return RoundResult(
                    RoundOutcome.WAIT_FTS,
                    progress,
                    held,
                    totals_now,
                    block.files if block is not None else 0,
                    block.is_open if block is not None else True,
                    submitted=tuple(jobs),
                )
            for sub in jobs:  # every destination was already right: nothing to wait for
                collected = collect_chunk(sub, catalogue=catalogue, transfertool=tool)
                if collected is not None:
                    _count(collected, totals_now)
        else:
            results = _copy_chunks(
                site_plan.chunks,
                catalogue=catalogue,
                sites=sites,
                storage=storage,
                transfertool=tool,
                parallel=settings.chunk_parallel,
                done=functools.partial(_chunk_done, totals_now, publish),
            )
    if site.archive:
        polled = poll_archive(
            catalogue=catalogue, sites=sites, storage=storage, data_type=kind, block_id=settings.block_id
        )
        if polled.archived:
            log.info("%d files confirmed on tape", len(polled.archived))
    progress, held = site_snapshot(catalogue, sites, kind, settings.block_id, site.name, settings.retry)
    if closed and reachable and progress.pending == 0 and not site.archive and not totals_now.get("verified"):
        # Once closed, check the good replicas this task did not just copy and check: a file damaged on disk
        # since its validation becomes BAD here and is retransferred by the following rounds.
        verified = verify_site(
            catalogue,
            storage,
            site,
            kind,
            settings.block_id,
            validated_before=datetime.fromisoformat(str(totals_now["started_at"])),
        )
        totals_now["verified"] = verified.unreachable == 0
        if verified.bad:
            log.warning("%d replicas at %s failed verification: %s", len(verified.bad), site.name, verified.bad)
    progress, held = publish()
    block = catalogue.get_block(kind, settings.block_id)
    known_files = block.files if block is not None else 0
    known_open = block.is_open if block is not None else True
    if closed and progress.pending == 0:
        if progress.problematic:
            reasons = "; ".join(f"{lfn}: {why}" for lfn, why in list(progress.reasons.items())[:10])
            message = (
                f"{settings.block} at {site.name} is Problematic: {progress.problematic} of {progress.assigned} "
                f"files failed after {settings.retry.max_attempts} attempts — {reasons}"
            )
            return RoundResult(
                RoundOutcome.PROBLEMATIC,
                progress,
                held,
                totals_now,
                known_files,
                known_open,
                chunks=tuple(results),
                message=message,
            )
        return RoundResult(
            RoundOutcome.DONE, progress, held, totals_now, known_files, known_open, chunks=tuple(results)
        )
    # Not finished: sleep until something can change. New files or the block closing wake it at once; pending
    # files (backoff, hops, tape migration) are looked at again after a while — bad replicas become eligible
    # again after the retransfer backoff, so look no later than that.
    recheck = min(settings.recheck_seconds, settings.retry.backoff.total_seconds())
    wait = timedelta(seconds=settings.archive_poll_seconds if site.archive else max(recheck, 0.0))
    later = utc_now()
    wake_at = later + wait if progress.pending or settings.close_at is None else settings.close_at
    if not closed and settings.close_at is not None:
        wake_at = min(wake_at, settings.close_at)
    if held_open is not None:
        # Due but held open: ask the gate again after a while (or at its bound), not at once.
        again = later + timedelta(seconds=max(settings.close_recheck_seconds, 1.0))
        if held_open.deadline is not None:
            again = min(again, max(held_open.deadline, later))
        wake_at = max(wake_at, again) if not progress.pending else min(later + wait, again)
    return RoundResult(
        RoundOutcome.WAIT, progress, held, totals_now, known_files, known_open, wake_at=wake_at, chunks=tuple(results)
    )


def _copy_chunks(
    chunks: Sequence[Chunk],
    *,
    catalogue: Catalogue,
    sites: SitesConfig,
    storage: Storage,
    transfertool: Transfertool,
    parallel: int,
    done: Callable[[ChunkResult], object],
) -> list[ChunkResult]:
    """Copy a site's chunks, ``parallel`` at a time; ``done`` runs as each chunk completes.

    A backend that verifies every copy against the catalogue's size and adler32 (the gfal2 engine) has already
    checksummed the replica at its destination: its FINISHED files are VALIDATED without asking again.
    """
    verifies = bool(getattr(transfertool, "verifies_against_catalogue", False))

    def one(chunk: Chunk) -> ChunkResult:
        result = replicate_chunk(chunk, catalogue=catalogue, sites=sites, transfertool=transfertool, storage=storage)
        if not verifies:
            validate_chunk(chunk, catalogue=catalogue, sites=sites, storage=storage)
        return result

    results: list[ChunkResult] = []
    if parallel <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            results.append(one(chunk))
            done(results[-1])
        return results
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="chunk") as pool:
        futures = [pool.submit(one, chunk) for chunk in chunks]
        for future in as_completed(futures):
            results.append(future.result())
            done(results[-1])
    return results


# -- a whole block, for tools and tests ----------------------------------------------------------------------


def run_block(
    *,
    catalogue: Catalogue,
    sites: SitesConfig,
    transfertool: Transfertool,
    storage: Storage,
    data_type: DataType | str,
    block_id: str,
    multihop: bool = False,
    archive: bool = True,
    only: Iterable[str] | None = None,
    retry: RetryPolicy | None = None,
    limits: ChunkLimits | None = None,
    rounds: int = 4,
    chunk_parallel: int = 4,
    record: Callable[[str, SiteProgress, int], None] | None = None,
) -> list[ChunkResult]:
    """The block operator's rounds without Airflow: every target site (or ``only``) round after round (the
    block left open) until no round copies anything — routed sites are fed once their hop holds validated
    replicas. The same :func:`run_site_round` the DAG runs."""
    kind = DataType.parse(data_type)
    targets = (
        list(only) if only is not None else [s.name for s in planning.targets(sites.for_type(kind), archive=archive)]
    )
    results: list[ChunkResult] = []
    totals: dict[str, Mapping[str, Any]] = {}
    for _ in range(rounds):
        moved = False
        for name in targets:
            settings = RoundSettings(
                site=name,
                data_type=kind,
                block_id=block_id,
                retry=retry or RetryPolicy(),
                multihop=multihop,
                limits=limits,
                chunk_parallel=chunk_parallel,
            )
            sink: ProgressSink | None = None
            if record is not None:
                sink = functools.partial(record, name)
            outcome = run_site_round(
                settings,
                catalogue=catalogue,
                sites=sites,
                storage=storage,
                transfertool=lambda: transfertool,
                totals=totals.get(name),
                record=sink,
            )
            totals[name] = outcome.totals
            results.extend(outcome.chunks)
            moved = moved or bool(outcome.chunks)
        if not moved:
            break
    return results


# -- helpers --------------------------------------------------------------------------------------------------


def _state_at(by_site: Mapping[str, ReplicaInfo], site: str) -> ReplicaState | None:
    info = by_site.get(site)
    return info.state if info is not None else None


def _group_by_reason(failed: Mapping[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for lfn, reason in failed.items():
        grouped.setdefault(reason[:1000], []).append(lfn)
    return grouped


def _remove_quietly(storage: Storage, url: str) -> None:
    try:
        storage.unlink(url)
    except StorageNotFoundError:
        pass
    except StorageError as exc:
        log.warning("could not remove the wrong replica %s: %s", url, exc)
