"""HTCondor compute backend (``htcondor2`` bindings): one cluster per batch, the job key in ``RawflowKey``.

Jobs run the ``rawflow-job`` wrapper from the pool's software area (/opt/rawflow/sw, like CVMFS): it stages
``@in:`` arguments in and ``@out:`` arguments out over xrootd (see :mod:`rawflow.compute.job_wrapper`) and
records its report and output tails in the job's ClassAd, which ``collect`` reads from the queue or history.

The pure parts (key checks, argument quoting, the submit description, state mapping) are module functions
unit-tested without a pool; :class:`HTCondorBackend` only talks to the schedd, every call bounded in time.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from rawflow.compute.base import (
    JOB_KEY,
    ComputeBackendError,
    ComputeJobError,
    JobHandle,
    JobOutcome,
    JobSpec,
    JobState,
    JobStatus,
)

T = TypeVar("T")

WRAPPER = "/opt/rawflow/sw/bin/rawflow-job"
KEY_ATTR = "RawflowKey"
BATCH_ATTR = "RawflowBatch"
RESULT_NAMES = ("RawflowReport", "RawflowStdout", "RawflowStderr")
RESULT_MAX_PARTS = 64  # = job_wrapper.CHIRP_MAX_PARTS: a long value is recorded as Name, Name_1, …
RESULT_ATTRS = tuple(name if i == 0 else f"{name}_{i}" for name in RESULT_NAMES for i in range(RESULT_MAX_PARTS))
STATUS_ATTRS = (
    KEY_ATTR,
    "ClusterId",
    "ProcId",
    "JobStatus",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    "HoldReason",
    "HoldReasonCode",
    "RemoveReason",
)
TAIL_LIMIT = 4096

# HTCondor JobStatus codes.
IDLE, RUNNING, REMOVED, COMPLETED, HELD, TRANSFERRING_OUTPUT, SUSPENDED = 1, 2, 3, 4, 5, 6, 7
HOLD_BY_USER = 1  # HoldReasonCode of condor_hold (or the bindings' JobAction.Hold)


def check_key(key: str) -> str:
    if not JOB_KEY.fullmatch(key):
        raise ComputeJobError(f"invalid job key {key!r}: expected {JOB_KEY.pattern}")
    return key


def check_batch(batch: str) -> str:
    if not JOB_KEY.fullmatch(batch):
        raise ComputeJobError(f"invalid batch name {batch!r}: expected {JOB_KEY.pattern}")
    return batch


def quote_arguments(args: Sequence[str]) -> str:
    """HTCondor's new-style ``arguments`` (pure): each argument in single quotes ('' and "" escape them), the
    whole in double quotes. Newlines and ``$(`` (macro expansion) are refused: they cannot pass unchanged."""
    quoted = []
    for arg in args:
        if "\n" in arg or "\r" in arg or "$(" in arg:
            raise ComputeJobError(f"job argument {arg!r} holds a newline or '$(': HTCondor cannot pass it as is")
        quoted.append("'" + arg.replace("'", "''").replace('"', '""') + "'")
    return '"' + " ".join(quoted) + '"'


def classad_string(text: str) -> str:
    """A ClassAd string literal (pure)."""
    if "\n" in text or "\r" in text:
        raise ComputeJobError(f"value {text!r} holds a newline")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def submit_description(
    batch: str, *, request_memory_mb: int = 512, request_disk_kb: int = 1_000_000, job_lease_s: int = 120
) -> dict[str, str]:
    """The cluster's submit description (pure); per-job values come from :func:`item_data`.

    No shared file system: stdout/stderr go nowhere on the submit side (the wrapper records their tails in the
    job ad), inputs and outputs move over xrootd; nothing is transferred back (``transfer_output_files`` empty).
    ``job_lease_s``: how long a restarted schedd waits to reconnect to a running job before it requeues it (the
    default 40 min would leave jobs of a crashed node "running" that long).
    """
    check_batch(batch)
    return {
        "universe": "vanilla",
        "executable": WRAPPER,
        "transfer_executable": "false",
        "arguments": "$(arguments)",
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT",
        "transfer_output_files": "",
        "output": "/dev/null",
        "error": "/dev/null",
        "initialdir": "/tmp",
        "environment": '"PATH=/usr/bin:/bin"',
        "request_cpus": "1",
        "request_memory": str(request_memory_mb),
        "request_disk": str(request_disk_kb),
        "job_lease_duration": str(job_lease_s),
        "+WantIOProxy": "true",
        f"+{KEY_ATTR}": "$(key)",
        f"+{BATCH_ATTR}": classad_string(batch),
        "+RawflowPayload": "$(payload)",
        "+RawflowLabels": "$(labels)",
        "batch_name": batch,
    }


def item_data(jobs: Sequence[JobSpec]) -> list[dict[str, str]]:
    """One itemdata row per job (pure): the values its ``$(…)`` macros take."""
    rows = []
    for job in jobs:
        check_key(job.key)
        if not JOB_KEY.fullmatch(job.payload):
            raise ComputeJobError(f"invalid payload name {job.payload!r}")
        labels = json.dumps(dict(job.labels), sort_keys=True, ensure_ascii=True)
        rows.append(
            {
                "key": classad_string(job.key),
                "payload": classad_string(job.payload),
                "labels": classad_string(labels),
                "arguments": quote_arguments([job.payload, *job.args]),
            }
        )
    return rows


def key_constraint(keys: Iterable[str]) -> str:
    """A constraint matching jobs with any of ``keys`` (pure; keys are validated, so they need no escaping)."""
    wanted = sorted({check_key(k) for k in keys})
    return "member(" + KEY_ATTR + ", {" + ", ".join(f'"{k}"' for k in wanted) + "})"


def job_state(ad: Mapping[str, Any]) -> JobState:
    """HTCondor JobStatus (and exit) → JobState (pure)."""
    status = int(ad.get("JobStatus", 0))
    if status in (IDLE,):
        return JobState.QUEUED
    if status in (RUNNING, TRANSFERRING_OUTPUT, SUSPENDED):
        return JobState.RUNNING
    if status == HELD:
        return JobState.HELD
    if status == REMOVED:
        return JobState.REMOVED
    if status == COMPLETED:
        if ad.get("ExitBySignal") is True:
            return JobState.FAILED
        return JobState.DONE if int(ad.get("ExitCode", 1) or 0) == 0 else JobState.FAILED
    return JobState.FAILED


def backend_id(ad: Mapping[str, Any]) -> str:
    return f"{int(ad['ClusterId'])}.{int(ad['ProcId'])}"


def latest_by_key(ads: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Per key the job to report (pure): the newest job that is not REMOVED, else the newest REMOVED one."""
    chosen: dict[str, Mapping[str, Any]] = {}

    def rank(ad: Mapping[str, Any]) -> tuple[bool, int, int]:
        return (int(ad.get("JobStatus", 0)) != REMOVED, int(ad["ClusterId"]), int(ad["ProcId"]))

    for ad in ads:
        key = ad.get(KEY_ATTR)
        if not isinstance(key, str):
            continue
        if key not in chosen or rank(ad) > rank(chosen[key]):
            chosen[key] = ad
    return chosen


def hold_reason(ad: Mapping[str, Any]) -> str | None:
    """Why a held job is held (pure): its HoldReason, else what its HoldReasonCode says (a hold through the
    bindings' JobAction.Hold leaves HoldReason empty, with code 1)."""
    text = str(ad.get("HoldReason") or "").strip()
    if text:
        return text
    code = ad.get("HoldReasonCode")
    if code is None:
        return None
    if int(code) == HOLD_BY_USER:
        return f"by a user or an administrator (condor_hold, HoldReasonCode {HOLD_BY_USER})"
    return f"HoldReasonCode {int(code)}"


def job_status(key: str, ad: Mapping[str, Any] | None) -> JobStatus:
    if ad is None:
        return JobStatus(key=key, backend_id=None, state=JobState.MISSING)
    state = job_state(ad)
    exit_code = ad.get("ExitCode") if state in (JobState.DONE, JobState.FAILED) else None
    return JobStatus(
        key=key,
        backend_id=backend_id(ad),
        state=state,
        hold_reason=hold_reason(ad) if state is JobState.HELD else None,
        exit_code=int(exit_code) if exit_code is not None else None,
    )


def _text_attr(ad: Mapping[str, Any], name: str) -> str:
    """A text the job wrapper recorded with chirp (base64 of UTF-8; see job_wrapper.classad_value)."""
    raw = ad.get(name)
    if not isinstance(raw, str):
        return ""
    for part in range(1, RESULT_MAX_PARTS):
        piece = ad.get(f"{name}_{part}")
        if not isinstance(piece, str):
            break
        raw += piece
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8", "replace")
    except ValueError:
        return ""


def job_outcome(key: str, ad: Mapping[str, Any] | None) -> JobOutcome:
    """A terminal job's outcome from its ad (pure): exit code, reasons, tails and the wrapper's report."""
    status = job_status(key, ad)
    if ad is None:
        return JobOutcome(key=key, backend_id=None, state=JobState.MISSING)
    try:
        report = json.loads(_text_attr(ad, "RawflowReport") or "{}")
    except ValueError:
        report = {}
    stdout = _text_attr(ad, "RawflowStdout")
    stderr = _text_attr(ad, "RawflowStderr")
    reason = ad.get("RemoveReason") if status.state is JobState.REMOVED else ad.get("HoldReason")
    return JobOutcome(
        key=key,
        backend_id=status.backend_id,
        state=status.state,
        exit_code=status.exit_code,
        hold_reason=str(reason) if reason and status.state is not JobState.DONE else None,
        stdout_tail=stdout[-TAIL_LIMIT:],
        stderr_tail=stderr[-TAIL_LIMIT:],
        report=report if isinstance(report, dict) else {},
    )


_UNREACHABLE = ("connect", "locate", "timed out", "timeout", "communicat", "no such", "refused", "authenticat")


def _classify(exc: Exception, what: str, *, rejected_is_permanent: bool = False) -> Exception:
    text = f"{what}: {type(exc).__name__}: {exc}"
    if rejected_is_permanent and not any(word in str(exc).lower() for word in _UNREACHABLE):
        return ComputeJobError(f"the schedd rejected the {text}")
    return ComputeBackendError(text)


class HTCondorBackend:
    """ComputeBackend on an HTCondor schedd.

    ``condor_config``: the client config file (the grid writes one; it names the collector and token dir).
    ``collector``: host:port, default the config's COLLECTOR_HOST. ``timeout``: bound of every call (s).
    The bindings read their configuration per process, so one process talks to one pool at a time.
    """

    name = "htcondor"
    _config_lock = threading.Lock()

    def __init__(
        self,
        *,
        condor_config: str | None = None,
        collector: str | None = None,
        schedd_name: str | None = None,
        timeout: float = 60.0,
        request_memory_mb: int = 512,
        job_lease_s: int = 120,
    ) -> None:
        self.condor_config = condor_config
        self.collector = collector
        self.schedd_name = schedd_name
        self.timeout = timeout
        self.request_memory_mb = request_memory_mb
        self.job_lease_s = job_lease_s
        self._schedd: Any = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="htcondor")

    # --- plumbing -----------------------------------------------------------------------------------------
    def _htcondor(self) -> Any:
        import htcondor2

        if self.condor_config:
            with self._config_lock:
                if os.environ.get("CONDOR_CONFIG") != self.condor_config:
                    os.environ["CONDOR_CONFIG"] = self.condor_config
                    htcondor2.reload_config()
        return htcondor2

    def _bounded(
        self, what: str, call: Callable[[], T], *, rejected_is_permanent: bool = False, retry: bool = True
    ) -> T:
        """Run ``call`` within the time bound; htcondor errors become typed errors (and forget the schedd).

        ``retry``: one more try after a failure, with the schedd located again: a restarted schedd on the same
        address refuses the client's cached security session once ("Failed to read resume session response").
        Queries and job actions are safe to repeat; a submit is not (it may have been queued), so it never is.
        """
        try:
            return self._bounded_once(what, call, rejected_is_permanent=rejected_is_permanent)
        except ComputeBackendError:
            if not retry:
                raise
            return self._bounded_once(what, call, rejected_is_permanent=rejected_is_permanent)

    def _bounded_once(self, what: str, call: Callable[[], T], *, rejected_is_permanent: bool) -> T:
        def configured() -> T:
            self._htcondor()  # (re)load this backend's client config: the bindings hold one per process
            return call()

        future = self._pool.submit(configured)
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            # The stuck thread cannot be killed: leave it and use a fresh one for the next call.
            self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="htcondor")
            self._schedd = None
            raise ComputeBackendError(f"{what}: no answer from HTCondor within {self.timeout:.0f} s") from None
        except (ComputeBackendError, ComputeJobError):
            raise
        except Exception as exc:
            self._schedd = None
            raise _classify(exc, what, rejected_is_permanent=rejected_is_permanent) from exc

    def _get_schedd(self) -> Any:
        if self._schedd is None:
            htcondor = self._htcondor()
            collector = htcondor.Collector(self.collector) if self.collector else htcondor.Collector()
            if self.schedd_name:
                ad = collector.locate(htcondor.DaemonType.Schedd, self.schedd_name)
            else:
                ad = collector.locate(htcondor.DaemonType.Schedd)
            self._schedd = htcondor.Schedd(ad)
        return self._schedd

    def _ads(self, keys: Sequence[str], projection: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """Per key the job to report, from the queue and the history."""
        if not keys:
            return {}
        constraint = key_constraint(keys)

        def query() -> list[Mapping[str, Any]]:
            schedd = self._get_schedd()
            ads: list[Mapping[str, Any]] = [
                dict(ad) for ad in schedd.query(constraint=constraint, projection=list(projection))
            ]
            ads += [dict(ad) for ad in schedd.history(constraint, list(projection), match=-1)]
            return ads

        return latest_by_key(self._bounded("query jobs", query))

    # --- ComputeBackend -----------------------------------------------------------------------------------
    def submit(self, jobs: Sequence[JobSpec], *, batch: str) -> list[JobHandle]:
        description = submit_description(batch, request_memory_mb=self.request_memory_mb, job_lease_s=self.job_lease_s)
        if len({job.key for job in jobs}) != len(jobs):
            raise ComputeJobError(f"batch {batch!r} holds the same key twice")
        rows = item_data(jobs)
        existing = {
            key: ad
            for key, ad in self._ads([j.key for j in jobs], STATUS_ATTRS).items()
            if job_state(ad) is not JobState.REMOVED
        }
        handles: dict[str, JobHandle] = {
            key: JobHandle(key=key, backend_id=backend_id(ad), batch=str(ad.get(BATCH_ATTR) or batch), new=False)
            for key, ad in existing.items()
        }
        todo = [(job, row) for job, row in zip(jobs, rows, strict=True) if job.key not in existing]
        if todo:

            def do_submit() -> tuple[int, int]:
                htcondor = self._htcondor()
                result = self._get_schedd().submit(htcondor.Submit(description), itemdata=iter([r for _, r in todo]))
                return int(result.cluster()), int(result.first_proc())

            cluster, first = self._bounded(
                f"submit of batch {batch!r}", do_submit, rejected_is_permanent=True, retry=False
            )
            for offset, (job, _) in enumerate(todo):
                handles[job.key] = JobHandle(
                    key=job.key, backend_id=f"{cluster}.{first + offset}", batch=batch, new=True
                )
        return [handles[job.key] for job in jobs]

    def poll(self, keys: Sequence[str]) -> dict[str, JobStatus]:
        ads = self._ads(keys, STATUS_ATTRS)
        return {key: job_status(key, ads.get(key)) for key in keys}

    def collect(self, keys: Sequence[str]) -> dict[str, JobOutcome]:
        ads = self._ads(keys, (*STATUS_ATTRS, BATCH_ATTR, *RESULT_ATTRS))
        outcomes = {key: job_outcome(key, ads.get(key)) for key in keys}
        return {key: outcome for key, outcome in outcomes.items() if outcome.state.terminal}

    def _act(self, action_name: str, keys: Sequence[str], extra: str) -> None:
        if not keys:
            return
        constraint = f"({key_constraint(keys)}) && {extra}"

        def act() -> None:
            htcondor = self._htcondor()
            self._get_schedd().act(getattr(htcondor.JobAction, action_name), constraint)

        self._bounded(f"{action_name.lower()} jobs", act)

    def release(self, keys: Sequence[str]) -> None:
        self._act("Release", keys, f"JobStatus == {HELD}")

    def cancel(self, keys: Sequence[str]) -> None:
        self._act("Remove", keys, f"JobStatus != {REMOVED} && JobStatus != {COMPLETED}")

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._schedd = None


__all__ = [
    "HTCondorBackend",
    "check_key",
    "classad_string",
    "hold_reason",
    "item_data",
    "job_outcome",
    "job_state",
    "job_status",
    "key_constraint",
    "latest_by_key",
    "quote_arguments",
    "submit_description",
]
