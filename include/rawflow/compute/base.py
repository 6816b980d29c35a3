"""The compute-backend interface (the transfer tool's sibling): run batches of payload jobs on a batch
system (HTCondor) or a workload management system (DIRAC).

A job runs one payload (``raw2rtraw``, ``rec``, ``dqm``, …) over its input URLs and writes its output URLs.
Every job has a deterministic ``key`` (derived from the payload and its inputs by the caller), recorded by the
backend on the job itself, so submitting a key again finds the live or finished job instead of running it twice.
A batch is submitted as one unit (one HTCondor cluster, one DIRAC parametric job).

Every backend passes the same contract suite (tests/integration/compute_contract.py).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rawflow.errors import PermanentError, RawflowError, TransientError

JOB_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")
"""Keys are stored as job attributes and used in file names: letters, digits, '_', '.', ':', '-'."""


STAGE_IN = "@in:"
STAGE_OUT = "@out:"


def stage_in(url: str) -> str:
    """A job argument the job wrapper stages in from ``url`` before the payload runs (replaced by the local
    file). Payload arguments that are neither stage_in nor stage_out pass unchanged."""
    return STAGE_IN + url


def stage_out(url: str) -> str:
    """A job argument naming a local output file the wrapper stages out to ``url`` after the payload succeeded
    (with its size and adler32 in the job's report)."""
    return STAGE_OUT + url


class ComputeError(RawflowError):
    """A compute backend failed as a whole (not one job's payload)."""


class ComputeBackendError(ComputeError, TransientError):
    """The backend (schedd, collector, WMS) is unreachable or busy: try again later."""


class ComputeJobError(ComputeError, PermanentError):
    """A job description the backend rejects, or a key that is malformed."""


class JobState(enum.StrEnum):
    QUEUED = "queued"  # waiting for a slot (HTCondor idle, DIRAC waiting/checking)
    RUNNING = "running"
    HELD = "held"  # stopped by the system (HTCondor hold): needs a release or a resubmission
    DONE = "done"  # exited 0
    FAILED = "failed"  # exited non-zero, or the system gave up on it
    REMOVED = "removed"  # cancelled on purpose
    MISSING = "missing"  # the backend knows no job with this key (vanished: schedd lost it, condor_rm, …)

    @property
    def terminal(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.REMOVED, JobState.MISSING)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job to run. ``args`` are the payload's arguments in order: :func:`stage_in`/:func:`stage_out` URLs
    for its input and output files, anything else (options) passed unchanged;
    ``inputs``/``outputs`` name the LFNs it reads and writes (bookkeeping and lineage)."""

    key: str
    payload: str
    args: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)  # e.g. {"block": "20261123", "run": "1234"}

    def __post_init__(self) -> None:
        if not JOB_KEY.fullmatch(self.key):
            raise ComputeJobError(f"invalid job key {self.key!r}: expected {JOB_KEY.pattern}")


@dataclass(frozen=True, slots=True)
class JobHandle:
    """Where a submitted job lives: ``backend_id`` is e.g. HTCondor's ``cluster.proc`` or a DIRAC job id."""

    key: str
    backend_id: str
    batch: str
    new: bool  # False when submit found an existing job for this key


@dataclass(frozen=True, slots=True)
class JobStatus:
    key: str
    backend_id: str | None
    state: JobState
    hold_reason: str | None = None
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """A finished job: exit code or hold reason, the tails of its output, and the payload's report (the JSON
    the job wrapper writes: per output its LFN, size, adler32 and event count; per input its event count)."""

    key: str
    backend_id: str | None
    state: JobState
    exit_code: int | None = None
    hold_reason: str | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    report: Mapping[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """One line a shifter can act on."""
        if self.state is JobState.DONE:
            return "done"
        if self.hold_reason:
            return f"held: {self.hold_reason}"
        last = next((line for line in reversed(self.stderr_tail.splitlines()) if line.strip()), "")
        code = f"exit code {self.exit_code}" if self.exit_code is not None else self.state.value
        return f"{code}: {last}" if last else code


@runtime_checkable
class ComputeBackend(Protocol):
    """What Rawflow needs of a batch system. Every method is safe to call again (idempotent by key)."""

    name: str

    def submit(self, jobs: Sequence[JobSpec], *, batch: str) -> list[JobHandle]:
        """Submit ``jobs`` as one unit named ``batch``. A key that already has a job that is not REMOVED or
        MISSING is not submitted again: its existing handle comes back with ``new=False``."""
        ...

    def poll(self, keys: Sequence[str]) -> dict[str, JobStatus]:
        """Current state of each key (MISSING when unknown). Cheap and free of payload I/O: triggers call it."""
        ...

    def collect(self, keys: Sequence[str]) -> dict[str, JobOutcome]:
        """Outcomes of the keys whose jobs are terminal (others are left out)."""
        ...

    def release(self, keys: Sequence[str]) -> None:
        """Release HELD jobs so they run again."""
        ...

    def cancel(self, keys: Sequence[str]) -> None:
        """Remove the jobs (REMOVED afterwards); unknown keys are ignored."""
        ...

    def close(self) -> None: ...
