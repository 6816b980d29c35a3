"""When a derived block (RTRAW, ESD) may close: after its parent block, once keep-up has made what it can.

A RAW block closes by the clock (end of the receiving day + grace). Its RTRAW block is made by keep-up from
those RAW files, so closing it by the same clock would shut out the RTRAW of a RAW file that arrived late
(keep-up would then fail to register it: "block closed"). A derived block therefore closes only when

* its parent block (RAW for RTRAW, RTRAW for ESD) is closed, and
* keep-up has nothing pending for the day: every parent file has its child, or its keep-up job is Problematic
  (with a reason; a shifter's ``rawflow jobs retry`` makes it pending again);

or, as a bound, once ``max_wait`` has passed since the parent closed: then it closes anyway and the decision
lists what is missing (parent file → why), for the block report and the logs.

:func:`decide_close` is the pure rule; :func:`derived_close` gathers its facts from the catalogue and the jobs
table. Both are Airflow-free; the block round (:func:`rawflow.replication.run_site_round`) asks before closing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rawflow.catalogue.base import Catalogue
from rawflow.naming import DERIVATION, DataType, block_name
from rawflow.processing.jobs import JobStore
from rawflow.processing.planning import STAGE_TYPES, JobPhase

DEFAULT_MAX_WAIT = timedelta(hours=12)
MAX_LISTED = 50  # missing files named in a decision (the count is always complete)
CAMPAIGN_KEY_PREFIX = "c."  # campaign jobs share the table; they never make keep-up outputs


@dataclass(frozen=True, slots=True)
class CloseDecision:
    """Whether the block may close now. ``missing``: parent LFN → why its child is not there (at most
    :data:`MAX_LISTED`; ``missing_count`` is the full count). ``forced``: closed by the bound, files missing.
    ``deadline``: when the bound closes it (None while the parent is open)."""

    close: bool
    reason: str
    missing_count: int = 0
    missing: Mapping[str, str] = field(default_factory=dict)
    forced: bool = False
    deadline: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "close": self.close,
            "reason": self.reason,
            "forced": self.forced,
            "missing_count": self.missing_count,
            "missing": dict(self.missing),
            "deadline": self.deadline.isoformat() if self.deadline else None,
        }


def decide_close(
    *,
    block: str,
    parent: str,
    parent_exists: bool,
    parent_open: bool,
    parent_closed_at: datetime | None,
    pending: Mapping[str, str],
    now: datetime,
    max_wait: timedelta = DEFAULT_MAX_WAIT,
) -> CloseDecision:
    """The rule. ``pending``: parent files keep-up may still turn into this block's files (LFN → why not yet);
    files whose job is Problematic are not pending. ``parent_closed_at`` None (not recorded): the bound counts
    from ``now``, i.e. the block waits a full ``max_wait`` from the first time it is asked."""
    if not parent_exists:
        return CloseDecision(True, f"{parent} does not exist: nothing to derive {block} from")
    if parent_open:
        return CloseDecision(False, f"waiting for {parent} to close")
    if not pending:
        return CloseDecision(True, f"{parent} is closed and keep-up has nothing pending for it")
    deadline = (parent_closed_at or now) + max_wait
    listed = dict(sorted(pending.items())[:MAX_LISTED])
    if now < deadline:
        return CloseDecision(
            False,
            f"{parent} is closed; keep-up still owes {len(pending)} file(s) of {block}",
            missing_count=len(pending),
            missing=listed,
            deadline=deadline,
        )
    return CloseDecision(
        True,
        f"{parent} closed {max_wait} ago and keep-up still owes {len(pending)} file(s): {block} closed without them",
        missing_count=len(pending),
        missing=listed,
        forced=True,
        deadline=deadline,
    )


def _payload_making(data_type: DataType) -> str:
    return next(name for name, (_, output) in STAGE_TYPES.items() if output is data_type)


def pending_parents(catalogue: Catalogue, jobs: JobStore | None, data_type: DataType, block_id: str) -> dict[str, str]:
    """Parent files of the block with no child of ``data_type`` whose keep-up job is not Problematic: LFN →
    what keep-up is doing about it (no job yet, queued, running, retry wait, …)."""
    parent_type = DERIVATION[data_type]
    without = [f.lfn for f in catalogue.files_without_children(parent_type, block_id, data_type)]
    if not without:
        return {}
    state: dict[str, JobPhase] = {}
    if jobs is not None:
        # Newest update first: a file's most recent keep-up job decides (a retried one is pending again).
        for record in jobs.list_jobs(block_id=block_id, payload=_payload_making(data_type)):
            if record.key.startswith(CAMPAIGN_KEY_PREFIX):
                continue
            for lfn in record.inputs:
                state.setdefault(lfn, record.state)
    pending: dict[str, str] = {}
    for lfn in without:
        phase = state.get(lfn)
        if phase is JobPhase.PROBLEMATIC:
            continue
        pending[lfn] = "no keep-up job yet" if phase is None else f"keep-up job {phase.value}"
    return pending


def derived_close(
    catalogue: Catalogue,
    jobs: JobStore | None,
    data_type: DataType | str,
    block_id: str,
    *,
    now: datetime,
    max_wait: timedelta = DEFAULT_MAX_WAIT,
) -> CloseDecision:
    """May the derived block ``data_type``-``block_id`` close now? A type that is not derived (RAW) may."""
    kind = DataType.parse(data_type)
    block = block_name(kind, block_id)
    parent_type = DERIVATION.get(kind)
    if parent_type is None:
        return CloseDecision(True, f"{block} is not derived: it closes by the clock")
    parent = catalogue.get_block(parent_type, block_id)
    if parent is None:
        return decide_close(
            block=block,
            parent=block_name(parent_type, block_id),
            parent_exists=False,
            parent_open=False,
            parent_closed_at=None,
            pending={},
            now=now,
            max_wait=max_wait,
        )
    pending = pending_parents(catalogue, jobs, kind, block_id) if not parent.is_open else {}
    return decide_close(
        block=block,
        parent=parent.name,
        parent_exists=True,
        parent_open=parent.is_open,
        parent_closed_at=parent.closed_at,
        pending=pending,
        now=now,
        max_wait=max_wait,
    )
