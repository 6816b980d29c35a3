"""What the shifters see of keep-up processing: per block and run, files converted / reconstructed, jobs by
state, failures with their reasons, and the latest DQM summary (charge spectrum) of each run.

Reads the sql catalogue's ``files`` table and the jobs table in the same database (a few grouped queries,
whatever the number of files), for the Rawflow view's Processing page, its JSON API and ``make demo``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from rawflow.catalogue.base import utc_now
from rawflow.catalogue.sql import files as files_table
from rawflow.naming import DataType
from rawflow.processing.jobs import JobStore, processing_jobs
from rawflow.processing.planning import DQM, JobPhase

MAX_FAILURES_SHOWN = 200


@dataclass(slots=True)
class RunStatus:
    block_id: str
    run: int
    raw: int = 0
    rtraw: int = 0
    esd: int = 0
    jobs: dict[str, dict[str, int]] = field(default_factory=dict)  # payload → state → count
    dqm: dict[str, Any] | None = None

    @property
    def converted_pct(self) -> float:
        return round(100.0 * self.rtraw / self.raw, 1) if self.raw else 0.0

    @property
    def reconstructed_pct(self) -> float:
        return round(100.0 * self.esd / self.raw, 1) if self.raw else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "block_id": self.block_id,
            "run": self.run,
            "raw_files": self.raw,
            "rtraw_files": self.rtraw,
            "esd_files": self.esd,
            "converted_pct": self.converted_pct,
            "reconstructed_pct": self.reconstructed_pct,
            "jobs": self.jobs,
            "dqm": self.dqm,
        }


@dataclass(slots=True)
class ProcessingStatus:
    days: int
    runs: list[RunStatus]
    failures: list[dict[str, Any]]
    totals: dict[str, dict[str, int]]  # payload → state → count over the shown blocks

    def to_dict(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "runs": [r.to_dict() for r in self.runs],
            "failures": self.failures,
            "totals": self.totals,
        }


def processing_status(engine: Engine, *, days: int = 7) -> ProcessingStatus:
    """The last ``days`` receiving days, newest block first, runs in order."""
    first = f"{utc_now() - timedelta(days=days - 1):%Y%m%d}"
    inspector = sa.inspect(engine)
    runs: dict[tuple[str, int], RunStatus] = {}

    def run_of(block_id: str, run: int) -> RunStatus:
        return runs.setdefault((block_id, int(run)), RunStatus(block_id=block_id, run=int(run)))

    with engine.connect() as conn:
        if inspector.has_table("files"):
            query = (
                sa.select(files_table.c.block_id, files_table.c.run_number, files_table.c.data_type, sa.func.count())
                .where(files_table.c.block_id >= first)
                .group_by(files_table.c.block_id, files_table.c.run_number, files_table.c.data_type)
            )
            for block_id, run, data_type, n in conn.execute(query):
                status = run_of(block_id, run)
                if data_type == DataType.RAW.value:
                    status.raw = int(n)
                elif data_type == DataType.RTRAW.value:
                    status.rtraw = int(n)
                elif data_type == DataType.ESD.value:
                    status.esd = int(n)
        totals: dict[str, dict[str, int]] = {}
        failures: list[dict[str, Any]] = []
        if inspector.has_table("processing_jobs"):
            jobs = processing_jobs.c
            query = (
                sa.select(jobs.block_id, jobs.run, jobs.payload, jobs.state, sa.func.count())
                .where(jobs.block_id >= first)
                .group_by(jobs.block_id, jobs.run, jobs.payload, jobs.state)
            )
            for block_id, run, payload, state, n in conn.execute(query):
                per = run_of(block_id, run).jobs.setdefault(payload, {})
                per[state] = per.get(state, 0) + int(n)
                totals.setdefault(payload, {})[state] = totals.get(payload, {}).get(state, 0) + int(n)
    if inspector.has_table("processing_jobs"):
        store = JobStore(engine, create=False)
        for record in store.list_jobs(states=[JobPhase.PROBLEMATIC, JobPhase.RETRY_WAIT, JobPhase.HELD]):
            if record.block_id >= first and len(failures) < MAX_FAILURES_SHOWN:
                failures.append(
                    {
                        "key": record.key,
                        "payload": record.payload,
                        "block_id": record.block_id,
                        "run": record.run,
                        "state": record.state.value,
                        "attempts": record.attempts,
                        "exit_code": record.exit_code,
                        "reason": record.reason or record.hold_reason or "",
                        "input": record.inputs[0] if record.inputs else "",
                        "updated_at": record.updated_at.isoformat(),
                    }
                )
        # The newest finished DQM of each run (a run that gained files has several).
        for record in sorted(
            store.list_jobs(payload=DQM, states=[JobPhase.DONE]), key=lambda r: (len(r.inputs), r.updated_at)
        ):
            if record.block_id >= first and record.summary is not None:
                run_of(record.block_id, record.run).dqm = record.summary
    ordered = sorted(runs.values(), key=lambda r: (r.block_id, -r.run), reverse=True)
    return ProcessingStatus(days=days, runs=ordered, failures=failures, totals=totals)


def format_status(status: ProcessingStatus) -> str:
    """A plain-text summary for ``make demo`` and logs."""
    lines = [f"keep-up processing, last {status.days} day(s):"]
    for run in status.runs:
        jobs = ", ".join(
            f"{payload} " + "/".join(f"{state}={n}" for state, n in sorted(states.items()))
            for payload, states in sorted(run.jobs.items())
        )
        dqm = f", DQM {run.dqm.get('events')} events" if run.dqm else ""
        lines.append(
            f"  {run.block_id} run {run.run}: RAW {run.raw}, RTRAW {run.rtraw} ({run.converted_pct}%), "
            f"ESD {run.esd} ({run.reconstructed_pct}%){dqm}; jobs: {jobs or '-'}"
        )
    for failure in status.failures[:10]:
        lines.append(f"  ! {failure['payload']} {failure['input']!r} {failure['state']}: {failure['reason']!r}")
    return "\n".join(lines)
