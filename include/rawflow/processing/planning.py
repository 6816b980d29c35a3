"""Pure keep-up planning: which inputs need a job, the job's deterministic key, its JobSpec, batches, the retry
policy and the output check. No I/O here: :mod:`rawflow.processing.keepup` feeds these the catalogue's answers.

Stages (docs/processing.md):

- ``raw2rtraw``: one RAW file → one RTRAW file (same day, same stem);
- ``rec``: one RTRAW file → one ESD file;
- ``dqm``: every RTRAW file of one run in one day → one DQM summary (JSON, not catalogued).

Monte Carlo campaigns (not keep-up) chain ``detsim`` (no input: events from a seed → DETSIM), ``elecsim``
(DETSIM → ELECSIM), ``cal`` (ELECSIM → CALIB) and ``rec`` (CALIB → ESD).
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from rawflow.compute.base import JobOutcome, JobSpec, JobState
from rawflow.errors import ConfigError
from rawflow.naming import EXPERIMENT, DataType, derived_lfn, parse_block_id, parse_lfn
from rawflow.payloads import PAYLOAD_VERSION

RAW2RTRAW, REC, DQM = "raw2rtraw", "rec", "dqm"
DETSIM, ELECSIM, CAL = "detsim", "elecsim", "cal"
STAGE_IN, STAGE_OUT = "@in:", "@out:"  # the job wrapper's markers (rawflow.compute.job_wrapper)
STAGES = (RAW2RTRAW, REC, DQM)
"""Keep-up's stages."""
GENERATORS = (DETSIM,)
"""Payloads that read no file: they make events (from a seed) — the first step of an MC campaign."""

PAYLOAD_VERSIONS: Mapping[str, str] = {name: PAYLOAD_VERSION for name in (RAW2RTRAW, REC, DQM, DETSIM, ELECSIM, CAL)}
"""Bumping a payload's version gives its jobs new keys: the same inputs are processed again (a reprocessing)."""

STAGE_TYPES: Mapping[str, tuple[DataType | None, DataType | None]] = {
    RAW2RTRAW: (DataType.RAW, DataType.RTRAW),
    REC: (DataType.RTRAW, DataType.ESD),
    DQM: (DataType.RTRAW, None),
    DETSIM: (None, DataType.DETSIM),
    ELECSIM: (DataType.DETSIM, DataType.ELECSIM),
    CAL: (DataType.ELECSIM, DataType.CALIB),
}
"""Each stage's input data type (None: a generator) and the catalogued data type it makes (DQM's summary is not
catalogued). ``rec`` also reads CALIB (the MC chain's calibrated hits, in RTRAW's layout)."""


class JobPhase(enum.StrEnum):
    """A job's state in the jobs table: the backend's states plus Rawflow's own bookkeeping."""

    SUBMITTING = "submitting"  # recorded before the backend call: a crash in between resubmits the same key
    QUEUED = "queued"
    RUNNING = "running"
    HELD = "held"
    RETRY_WAIT = "retry_wait"  # failed; resubmitted once its backoff has passed
    DONE = "done"  # outputs checked and registered with lineage
    PROBLEMATIC = "problematic"  # gave up: the reason says why; `rawflow jobs retry` starts it again

    @property
    def active(self) -> bool:
        return self in (JobPhase.SUBMITTING, JobPhase.QUEUED, JobPhase.RUNNING, JobPhase.HELD)


ACTIVE_PHASES = tuple(p for p in JobPhase if p.active)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A non-zero exit is retried ``max_failures - 1`` times with exponential backoff; a held job is released
    once, then removed and resubmitted; a vanished job is resubmitted. ``max_attempts`` bounds submissions of
    one key whatever the reason, so a job that keeps vanishing or holding also ends Problematic."""

    max_failures: int = 3
    max_attempts: int = 6
    backoff: timedelta = timedelta(minutes=2)
    max_backoff: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.max_attempts < self.max_failures:
            raise ConfigError("<retry>", "max_failures", self.max_failures, "need 1 <= max_failures <= max_attempts")

    def delay(self, failures: int) -> timedelta:
        """The wait before the next try after ``failures`` failures (1 → ``backoff``, doubling, capped)."""
        delay: timedelta = self.backoff * (2 ** max(failures - 1, 0))
        return min(delay, self.max_backoff)


class Action(enum.StrEnum):
    WAIT = "wait"  # still queued or running
    RELEASE = "release"  # held the first time
    RESUBMIT = "resubmit"  # held again, or vanished: remove (if needed) and submit a new attempt now
    RETRY_LATER = "retry_later"  # exited non-zero: a new attempt after the backoff
    CHECK = "check"  # exited 0: check the outputs and register them
    GIVE_UP = "give_up"  # Problematic


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str = ""


def decide(
    state: JobState, *, released: bool, failures: int, attempts: int, policy: RetryPolicy, reason: str = ""
) -> Decision:
    """What to do with a job the backend reports in ``state`` (``failures``/``attempts`` so far, this one's
    failure not yet counted)."""
    if state in (JobState.QUEUED, JobState.RUNNING):
        return Decision(Action.WAIT)
    if state is JobState.DONE:
        return Decision(Action.CHECK)
    if state is JobState.FAILED:
        if failures + 1 >= policy.max_failures:
            return Decision(Action.GIVE_UP, f"failed {failures + 1} times, last: {reason}")
        return Decision(Action.RETRY_LATER, reason)
    if attempts >= policy.max_attempts:
        return Decision(Action.GIVE_UP, f"submitted {attempts} times, last: {reason or state.value}")
    if state is JobState.HELD:
        return Decision(Action.RESUBMIT if released else Action.RELEASE, reason)
    # MISSING (schedd lost it, condor_rm by hand) or REMOVED behind our back: run it again.
    return Decision(Action.RESUBMIT, reason or f"job {state.value}")


# -- keys and specs ------------------------------------------------------------------------------------------


def job_key(payload: str, inputs: Sequence[str], version: str | None = None) -> str:
    """Deterministic: the payload, its version and its input LFNs. Readable prefix, digest for uniqueness."""
    version = version if version is not None else PAYLOAD_VERSIONS[payload]
    digest = hashlib.sha256("\n".join([payload, version, *sorted(inputs)]).encode()).hexdigest()[:24]
    return f"{payload}-v{version}-{digest}"


def attempt_key(key: str, attempt: int) -> str:
    """The backend key of one attempt: a retry is a new job, the same attempt is never submitted twice."""
    return f"{key}.{attempt}"


def dqm_lfn(block_id: str, run: int, key: str) -> str:
    """Where a run's DQM summary of one day goes (not catalogued: a per-run product, not a data type)."""
    day = parse_block_id(block_id)
    return f"/{EXPERIMENT}/dqm/{day:%Y}/{day:%m%d}/dqm.{run:06d}.{key.rsplit('-', 1)[-1]}.json"


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """A job to run: what the jobs table records and what the backend gets (``spec`` with the attempt key)."""

    key: str
    payload: str
    version: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    block_id: str
    run: int
    parameters: tuple[tuple[str, str], ...] = ()  # (name, value) for the payload's --param options, sorted

    def spec(self, attempt: int, url_of: Any) -> JobSpec:
        """The JobSpec of attempt ``attempt``; ``url_of(lfn)`` gives the Tier-0 URL. Arguments follow the
        payload's command line (docs/processing.md): ``raw2rtraw|rec|elecsim|cal [--param NAME=VALUE]... IN...
        OUT...`` (N inputs, then their N outputs in the same order), ``dqm [--param NAME=VALUE]... OUT IN...``,
        ``detsim [--param NAME=VALUE]... OUT`` (no input), each URL
        marked for the job wrapper to stage in (``@in:``) or out (``@out:``) over xrootd."""
        ins = tuple(STAGE_IN + url_of(lfn) for lfn in self.inputs)
        outs = tuple(STAGE_OUT + url_of(lfn) for lfn in self.outputs)
        options = tuple(arg for name, value in self.parameters for arg in ("--param", f"{name}={value}"))
        args = (*options, *outs, *ins) if self.payload == DQM else (*options, *ins, *outs)
        return JobSpec(
            key=attempt_key(self.key, attempt),
            payload=self.payload,
            args=args,
            inputs=self.inputs,
            outputs=self.outputs,
            labels={"block": self.block_id, "run": str(self.run), "rawflow_key": self.key},
        )


def plan_conversions(payload: str, inputs: Iterable[tuple[str, int]], *, block_id: str) -> list[PlannedJob]:
    """One job per input file for ``raw2rtraw``/``rec``: ``inputs`` are (LFN, run) of files with no output yet."""
    _, output_type = STAGE_TYPES[payload]
    if output_type is None:
        raise ConfigError("<keepup>", "payload", payload, "not a one-to-one conversion")
    version = PAYLOAD_VERSIONS[payload]
    return [
        PlannedJob(
            key=job_key(payload, [lfn], version),
            payload=payload,
            version=version,
            inputs=(lfn,),
            outputs=(derived_lfn(lfn, output_type),),
            block_id=block_id,
            run=run,
        )
        for lfn, run in sorted(inputs)
    ]


def plan_dqm(runs: Mapping[int, Sequence[str]], *, block_id: str) -> list[PlannedJob]:
    """One DQM job per run over all of the run's RTRAW files of the day (a new file later → a new key)."""
    version = PAYLOAD_VERSIONS[DQM]
    jobs = []
    for run, lfns in sorted(runs.items()):
        inputs = tuple(sorted(lfns))
        key = job_key(DQM, inputs, version)
        jobs.append(
            PlannedJob(
                key=key,
                payload=DQM,
                version=version,
                inputs=inputs,
                outputs=(dqm_lfn(block_id, run, key),),
                block_id=block_id,
                run=run,
            )
        )
    return jobs


_T = TypeVar("_T")


def batches(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """Fixed-size batches (one backend cluster each)."""
    if size < 1:
        raise ConfigError("<keepup>", "batch_size", size, "must be at least 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def batch_name(payload: str, block_id: str, keys: Sequence[str]) -> str:
    """A batch's name: deterministic in its members, so a repeated submit names the same batch."""
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:12]
    return f"{payload}-{block_id}-{digest}"


# -- the output check ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportedOutput:
    lfn: str
    size: int
    adler32: str
    events: int | None


class ReportError(ValueError):
    """A job report that does not say what the job wrote."""


def reported_outputs(outcome: JobOutcome, expected: Sequence[str]) -> dict[str, ReportedOutput]:
    """The report's output entries for the ``expected`` LFNs (matched by LFN, or by a URL ending in it)."""
    entries = outcome.report.get("outputs") if isinstance(outcome.report, Mapping) else None
    if not isinstance(entries, list):
        raise ReportError("the job report lists no outputs")
    found: dict[str, ReportedOutput] = {}
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        name = str(entry.get("lfn") or entry.get("url") or entry.get("path") or "")
        lfn = next((e for e in expected if name == e or name.endswith(e)), None)
        if lfn is None:
            continue
        try:
            size = int(entry["size"])
            adler32 = str(entry["adler32"]).lower().zfill(8)
        except (KeyError, TypeError, ValueError):
            raise ReportError(f"the job report gives no size/adler32 for {lfn}") from None
        events = entry.get("events")
        found[lfn] = ReportedOutput(lfn, size, adler32, int(events) if events is not None else None)
    missing = [lfn for lfn in expected if lfn not in found]
    if missing:
        raise ReportError(f"the job report does not list output {missing[0]}")
    return found


def reported_input_events(outcome: JobOutcome) -> int | None:
    """The total event count of the job's inputs, as the payload read them (the payload's own report, which
    the wrapper keeps under ``payload_report``; None if not reported)."""
    report: Any = outcome.report if isinstance(outcome.report, Mapping) else {}
    if isinstance(report.get("payload_report"), Mapping):
        report = report["payload_report"]
    entries = report.get("inputs")
    if not isinstance(entries, list):
        return None
    counts: list[int] = []
    for entry in entries:
        value = entry.get("events") if isinstance(entry, Mapping) else None
        if value is None:
            return None
        counts.append(int(value))
    return sum(counts) if counts else None


def reported_input_events_each(outcome: JobOutcome) -> list[int] | None:
    """The event count of each input, in the payload's order (None if any is not reported)."""
    report: Any = outcome.report if isinstance(outcome.report, Mapping) else {}
    if isinstance(report.get("payload_report"), Mapping):
        report = report["payload_report"]
    entries = report.get("inputs")
    if not isinstance(entries, list) or not entries:
        return None
    counts = [entry.get("events") if isinstance(entry, Mapping) else None for entry in entries]
    return None if any(c is None for c in counts) else [int(c) for c in counts]  # type: ignore[arg-type]


def check_output(reported: ReportedOutput, *, size: int, adler32: str, input_events: int | None) -> str | None:
    """Why an output at the Tier-0 does not match the job's report (None when it does)."""
    if size != reported.size:
        return f"{reported.lfn}: size {size} at the Tier-0, {reported.size} in the job report"
    if adler32 != reported.adler32:
        return f"{reported.lfn}: adler32 {adler32} at the Tier-0, {reported.adler32} in the job report"
    if input_events is not None and reported.events is not None and reported.events != input_events:
        return f"{reported.lfn}: {reported.events} events out, {input_events} in"
    return None


def run_of(lfn: str) -> int:
    return parse_lfn(lfn).file.run_number


def stream_of(lfn: str) -> str:
    return parse_lfn(lfn).file.stream_name


def due(now: datetime, next_attempt_at: datetime | None) -> bool:
    return next_attempt_at is None or next_attempt_at <= now


_BLOCK_URI = re.compile(r"rawflow://blocks/RAW-([0-9]{8})")


def blocks_from_asset_uris(uris: Iterable[str]) -> list[str]:
    """The RAW block ids named by the receiver's block Asset URIs (others ignored), sorted, unique."""
    found = set()
    for uri in uris:
        match = _BLOCK_URI.fullmatch(uri.strip())
        if match:
            parse_block_id(match[1])
            found.add(match[1])
    return sorted(found)
