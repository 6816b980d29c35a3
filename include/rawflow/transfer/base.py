"""The transfer-tool interface (in the spirit of Rucio's Transfertool): submit jobs, poll them, cancel them.

A job copies files; each file has one destination URL and one or more source URLs (alternatives, preferred
first). A file with ``hops`` is copied through those intermediate URLs in order (multihop). As in FTS, a job
with a multihop or a multi-source file holds that one file only. Job keys are deterministic, so submitting the same job twice gives the same job id.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rawflow.errors import PermanentError, RawflowError, TransientError


class TransferError(RawflowError):
    """A transfer backend failed as a whole (not one file of a job)."""


class TransferBackendError(TransferError, TransientError):
    """The backend is unreachable or answered with a server error: try again later."""


class TransferAuthError(TransferError, PermanentError):
    """The backend refused our credentials."""


class TransferJobError(TransferError, PermanentError):
    """A job the backend rejected as malformed."""


class UnknownJobError(TransferError, PermanentError):
    """The backend does not know this job id."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"unknown transfer job {job_id!r}")


class JobState(enum.StrEnum):
    SUBMITTED = "SUBMITTED"
    ACTIVE = "ACTIVE"
    FINISHED = "FINISHED"
    FINISHEDDIRTY = "FINISHEDDIRTY"  # some files finished, some failed
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.FINISHED, JobState.FINISHEDDIRTY, JobState.FAILED, JobState.CANCELED)


class FileState(enum.StrEnum):
    SUBMITTED = "SUBMITTED"
    ACTIVE = "ACTIVE"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in (FileState.FINISHED, FileState.FAILED, FileState.CANCELED)


@dataclass(frozen=True, slots=True)
class TransferFile:
    """One file to copy: ``sources`` are physical URLs, preferred first; ``hops`` intermediate URLs in order."""

    lfn: str
    sources: tuple[str, ...]
    destination: str
    size: int
    adler32: str
    hops: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.sources:
            raise TransferJobError(f"{self.lfn}: a transfer needs at least one source")


@dataclass(frozen=True, slots=True)
class TransferJob:
    """Files copied together. ``key`` is deterministic: the job id (gfal2) or the FTS ``sid``."""

    key: str
    files: tuple[TransferFile, ...]
    activity: str = "Raw Data Replication"
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.files:
            raise TransferJobError(f"job {self.key}: no files")
        if len(self.files) > 1 and any(f.hops or len(f.sources) > 1 for f in self.files):
            # As in FTS: a multihop or multiple-replica job carries one file.
            raise TransferJobError(f"job {self.key}: a multihop or multi-source job copies exactly one file")

    @property
    def multihop(self) -> bool:
        return any(f.hops for f in self.files)


@dataclass(frozen=True, slots=True)
class FileStatus:
    """How one file of a job went. ``source`` is the URL actually used; ``skipped`` means it was already there."""

    lfn: str
    destination: str
    state: FileState
    source: str | None = None
    reason: str | None = None
    bytes: int = 0
    skipped: bool = False
    transient: bool = False  # the failure may pass by itself (a site down): retry later


@dataclass(frozen=True, slots=True)
class JobStatus:
    job_id: str
    state: JobState
    files: tuple[FileStatus, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.state.terminal


def job_state_of(files: Sequence[FileStatus]) -> JobState:
    """The job state implied by its files' states (how FTS aggregates them)."""
    states = {f.state for f in files}
    if not states or states <= {FileState.SUBMITTED}:
        return JobState.SUBMITTED
    if any(not s.terminal for s in states):
        return JobState.ACTIVE
    if states == {FileState.FINISHED}:
        return JobState.FINISHED
    if states == {FileState.CANCELED}:
        return JobState.CANCELED
    if FileState.FINISHED in states:
        return JobState.FINISHEDDIRTY
    return JobState.FAILED


@runtime_checkable
class Transfertool(Protocol):
    """A transfer backend. ``prechecks_destinations``: it skips destinations already holding the right file."""

    name: str
    prechecks_destinations: bool

    def submit(self, jobs: Sequence[TransferJob]) -> list[str]:
        """Submit jobs; returns one job id per job, in order. Resubmitting a job returns the same id."""
        ...

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]: ...

    def cancel(self, job_ids: Sequence[str]) -> dict[str, JobState]: ...

    def close(self) -> None: ...
