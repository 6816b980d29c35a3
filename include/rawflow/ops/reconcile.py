"""Reconciliation of open blocks against their Tier-0 listing, as one run-once unit.

The broker may lose its log (Tansu keeps it in memory): a file whose announcement was never consumed still
sits in its block's Tier-0 directory. :class:`~rawflow.receiver.Reconciler` registers such files with the
size and adler32 the Tier-0 reports; this module decides which blocks to look at (every open block, plus the
latest receiving days, whose block may not exist yet if every announcement of the day was lost) and runs it
for each. One block's failure does not stop the others; the run reports it and the caller retries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Protocol

from rawflow.catalogue.base import BlockClosedError, BlockRecord, utc_now
from rawflow.errors import TransientError
from rawflow.naming import DataType, block_id_for, block_name, receiving_day
from rawflow.receiver import Reconciler, ReconcileReport

__all__ = ["ReconcileReport", "ReconcileRun", "Reconciler", "blocks_to_reconcile", "reconcile_blocks", "report_dict"]

DATA_TYPES = (DataType.RAW, DataType.RTRAW)
MAX_LISTED_LFNS = 50  # a report names at most this many recovered files (task logs and XComs stay small)


class BlockLister(Protocol):
    def list_blocks(self, data_type: DataType | None = None, *, is_open: bool | None = None) -> list[BlockRecord]: ...

    def get_block(self, data_type: DataType, block_id: str) -> BlockRecord | None: ...


def blocks_to_reconcile(
    catalogue: BlockLister,
    data_types: Sequence[DataType] = DATA_TYPES,
    *,
    today: date | None = None,
    recent_days: int = 1,
    timezone: str = "UTC",
) -> list[tuple[DataType, str]]:
    """Every open block of ``data_types``, plus today's and the ``recent_days`` days before unless closed;
    "today" is the receiving day now in ``timezone`` (the site policy's)."""
    today = today or receiving_day(utc_now(), timezone)
    wanted: set[tuple[DataType, str]] = set()
    for data_type in data_types:
        wanted |= {(data_type, b.block_id) for b in catalogue.list_blocks(data_type, is_open=True)}
        for back in range(recent_days + 1):
            block_id = block_id_for(today - timedelta(days=back))
            if (data_type, block_id) in wanted:
                continue
            block = catalogue.get_block(data_type, block_id)
            if block is None or block.is_open:
                wanted.add((data_type, block_id))
    return sorted(wanted, key=lambda key: (key[1], key[0].value))


@dataclass(slots=True)
class ReconcileRun:
    """What one pass over several blocks did: a report per block reconciled, the error per block that failed."""

    reports: list[ReconcileReport] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    closed: list[str] = field(default_factory=list)

    @property
    def recovered(self) -> int:
        return sum(r.recovered for r in self.reports)

    def to_dict(self) -> dict[str, Any]:
        return {
            "blocks": len(self.reports),
            "recovered": self.recovered,
            "reports": [report_dict(r) for r in self.reports],
            "failed": dict(self.failed),
            "closed_meanwhile": list(self.closed),
        }

    def summary(self) -> str:
        text = f"reconciled {len(self.reports)} block(s): {self.recovered} file(s) recovered"
        recovered = [f"{r.block}={r.recovered}" for r in self.reports if r.recovered]
        if recovered:
            text += f" ({', '.join(recovered)})"
        if self.failed:
            text += f"; {len(self.failed)} failed: " + "; ".join(f"{b}: {e}" for b, e in self.failed.items())
        return text


def report_dict(report: ReconcileReport) -> dict[str, Any]:
    return {
        "block": report.block,
        "listed": report.listed,
        "already_registered": report.already_registered,
        "recovered": report.recovered,
        "rejected": report.rejected,
        "skipped": report.skipped,
        "rejected_by_reason": dict(report.rejected_by_reason),
        "recovered_lfns": sorted(report.recovered_lfns)[:MAX_LISTED_LFNS],
    }


def reconcile_blocks(reconciler: Reconciler, blocks: Iterable[tuple[DataType, str]]) -> ReconcileRun:
    """Reconcile each block; a transient failure is recorded and the next block is done anyway."""
    run = ReconcileRun()
    for data_type, block_id in blocks:
        name = block_name(data_type, block_id)
        try:
            run.reports.append(reconciler.reconcile_block(data_type, block_id))
        except BlockClosedError:
            run.closed.append(name)  # closed since the listing: its files were checked before it closed
        except TransientError as exc:
            run.failed[name] = str(exc)
    return run
