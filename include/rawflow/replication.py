"""Run-once replication units, the steps Airflow tasks call: plan a block, replicate / archive / validate a
chunk, poll the archive. Each unit is idempotent: running it again after a success changes nothing and moves
no bytes (planning skips validated replicas; copies skip destinations that already hold the right file; FTS
jobs have deterministic ids).

Replica states in the catalogue: COPYING before a transfer (which counts an attempt), VALIDATED or BAD (with
the reason) after it, and for the tape site ARCHIVED once the tape endpoint reports the file on tape.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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
from rawflow.validation import MISSING, SiteProgress, block_progress, check_replica

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
    return block_progress(sites, files, replicas, retry, archive=archive)


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
    read_back: bool = False,
) -> list[ChunkResult]:
    """Plan → replicate → validate, round after round, until nothing is left to plan (routed sites are fed
    in a later round, once their hop holds validated replicas). The Airflow DAG runs the same units."""
    results: list[ChunkResult] = []
    only_list = list(only) if only is not None else None
    for _ in range(rounds):
        plan = plan_block(
            catalogue,
            sites,
            data_type,
            block_id,
            multihop=multihop,
            archive=archive,
            only=only_list,
            retry=retry,
            limits=limits,
        )
        if not plan.chunks:
            break
        for chunk in plan.chunks:
            results.append(
                replicate_chunk(chunk, catalogue=catalogue, sites=sites, transfertool=transfertool, storage=storage)
            )
        for chunk in plan.chunks:
            validate_chunk(chunk, catalogue=catalogue, sites=sites, storage=storage, read_back=read_back)
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
