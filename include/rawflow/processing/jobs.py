"""The jobs table: one row per keep-up job (deterministic key), upserted as the job moves, in the catalogue's
database (the same SQLAlchemy settings as the monitoring store). The Rawflow view, ``rawflow jobs`` and the
Prometheus metrics read it; :mod:`rawflow.processing.keepup` is its one writer.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from rawflow.catalogue.base import as_utc, utc_now
from rawflow.catalogue.sql import engine_url, sqlite_pragmas
from rawflow.errors import PermanentError, TransientError
from rawflow.processing.planning import ACTIVE_PHASES, JobPhase, PlannedJob, attempt_key

MAX_TEXT = 4000  # stderr tails and reasons are cut to this many characters

metadata = sa.MetaData()

processing_jobs = sa.Table(
    "processing_jobs",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("payload", sa.String(32), nullable=False),
    sa.Column("version", sa.String(16), nullable=False),
    sa.Column("backend", sa.String(32), nullable=False),
    sa.Column("backend_id", sa.String(64)),
    sa.Column("batch", sa.String(128)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("released", sa.Boolean, nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),  # JSON list of LFNs
    sa.Column("outputs", sa.Text, nullable=False),  # JSON list of LFNs
    sa.Column("block_id", sa.String(8), nullable=False),
    sa.Column("run", sa.BigInteger, nullable=False),
    sa.Column("exit_code", sa.Integer),
    sa.Column("hold_reason", sa.Text),
    sa.Column("stderr_tail", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("events", sa.BigInteger),
    sa.Column("summary", sa.Text),  # JSON: the DQM summary of a dqm job
    sa.Column("parameters", sa.Text),  # JSON [[name, value], ...]: a campaign sub-job's payload parameters
    sa.Column("submitted_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.Index("ix_processing_jobs_block_payload", "block_id", "payload"),
    sa.Index("ix_processing_jobs_state", "state"),
)


@dataclass(frozen=True, slots=True)
class JobRecord:
    key: str
    payload: str
    version: str
    backend: str
    state: JobPhase
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    block_id: str
    run: int
    updated_at: datetime
    attempts: int = 0
    failures: int = 0
    released: bool = False
    backend_id: str | None = None
    batch: str | None = None
    exit_code: int | None = None
    hold_reason: str | None = None
    stderr_tail: str | None = None
    reason: str | None = None
    events: int | None = None
    summary: dict[str, Any] | None = field(default=None, compare=False)
    submitted_at: datetime | None = None
    next_attempt_at: datetime | None = None
    parameters: tuple[tuple[str, str], ...] = ()

    @property
    def backend_key(self) -> str:
        """The key of the current attempt at the backend."""
        return attempt_key(self.key, max(self.attempts, 1))

    @classmethod
    def planned(cls, job: PlannedJob, backend: str) -> JobRecord:
        return cls(
            key=job.key,
            payload=job.payload,
            version=job.version,
            backend=backend,
            state=JobPhase.SUBMITTING,
            inputs=job.inputs,
            outputs=job.outputs,
            block_id=job.block_id,
            run=job.run,
            updated_at=utc_now(),
            parameters=job.parameters,
        )

    def to_planned(self) -> PlannedJob:
        return PlannedJob(
            key=self.key,
            payload=self.payload,
            version=self.version,
            inputs=self.inputs,
            outputs=self.outputs,
            block_id=self.block_id,
            run=self.run,
            parameters=self.parameters,
        )

    def evolve(self, **changes: Any) -> JobRecord:
        return replace(self, updated_at=utc_now(), **changes)

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "key": self.key,
            "payload": self.payload,
            "version": self.version,
            "backend": self.backend,
            "backend_id": self.backend_id,
            "batch": self.batch,
            "state": self.state.value,
            "attempts": self.attempts,
            "failures": self.failures,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "block_id": self.block_id,
            "run": self.run,
            "exit_code": self.exit_code,
            "hold_reason": self.hold_reason,
            "stderr_tail": self.stderr_tail,
            "reason": self.reason,
            "events": self.events,
            "submitted_at": iso(self.submitted_at),
            "updated_at": iso(self.updated_at),
            "next_attempt_at": iso(self.next_attempt_at),
            "parameters": dict(self.parameters),
        }


def _cut(text: str | None) -> str | None:
    return text[-MAX_TEXT:] if text else text


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except sa.exc.OperationalError as exc:
        raise TransientError(f"jobs database unavailable or busy: {exc.orig}") from exc
    except sa.exc.IntegrityError as exc:
        raise PermanentError(f"jobs database integrity error: {exc.orig}") from exc


class JobStore:
    """The ``processing_jobs`` table over SQLite or PostgreSQL."""

    def __init__(self, url_or_engine: str | Engine, *, create: bool = True) -> None:
        if isinstance(url_or_engine, Engine):
            self.engine = url_or_engine
        else:
            self.engine = sa.create_engine(engine_url(url_or_engine), pool_pre_ping=True)
            if self.engine.dialect.name == "sqlite":
                sa.event.listen(self.engine, "connect", sqlite_pragmas)
        self._dialect = self.engine.dialect.name
        if self._dialect not in ("sqlite", "postgresql"):
            raise PermanentError(f"the jobs table supports SQLite and PostgreSQL, not {self._dialect}")
        if create:
            with _database_errors():
                metadata.create_all(self.engine, checkfirst=True)
                self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """A table made by an older Rawflow gets the columns added since (nullable: old rows stay valid)."""
        have = {c["name"] for c in sa.inspect(self.engine).get_columns("processing_jobs")}
        for column in processing_jobs.columns:
            if column.name in have or not column.nullable:
                continue
            kind = column.type.compile(dialect=self.engine.dialect)
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.text(f'ALTER TABLE processing_jobs ADD COLUMN "{column.name}" {kind}'))
            except sa.exc.DBAPIError:
                # Another process added it at the same moment: fine if it is there now.
                now = {c["name"] for c in sa.inspect(self.engine).get_columns("processing_jobs")}
                if column.name not in now:
                    raise

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        with _database_errors(), self.engine.begin() as conn:
            yield conn

    @staticmethod
    def _row(record: JobRecord) -> dict[str, Any]:
        return {
            "key": record.key,
            "payload": record.payload,
            "version": record.version,
            "backend": record.backend,
            "backend_id": record.backend_id,
            "batch": record.batch,
            "state": record.state.value,
            "attempts": record.attempts,
            "failures": record.failures,
            "released": record.released,
            "inputs": json.dumps(list(record.inputs)),
            "outputs": json.dumps(list(record.outputs)),
            "block_id": record.block_id,
            "run": record.run,
            "exit_code": record.exit_code,
            "hold_reason": _cut(record.hold_reason),
            "stderr_tail": _cut(record.stderr_tail),
            "reason": _cut(record.reason),
            "events": record.events,
            "summary": json.dumps(record.summary) if record.summary is not None else None,
            "submitted_at": record.submitted_at,
            "updated_at": record.updated_at,
            "next_attempt_at": record.next_attempt_at,
            "parameters": json.dumps([list(p) for p in record.parameters]) if record.parameters else None,
        }

    @staticmethod
    def _record(row: Any) -> JobRecord:
        def when(value: datetime | None) -> datetime | None:
            return as_utc(value) if value is not None else None

        return JobRecord(
            key=row.key,
            payload=row.payload,
            version=row.version,
            backend=row.backend,
            backend_id=row.backend_id,
            batch=row.batch,
            state=JobPhase(row.state),
            attempts=int(row.attempts),
            failures=int(row.failures),
            released=bool(row.released),
            inputs=tuple(json.loads(row.inputs)),
            outputs=tuple(json.loads(row.outputs)),
            block_id=row.block_id,
            run=int(row.run),
            exit_code=row.exit_code,
            hold_reason=row.hold_reason,
            stderr_tail=row.stderr_tail,
            reason=row.reason,
            events=int(row.events) if row.events is not None else None,
            summary=json.loads(row.summary) if row.summary else None,
            submitted_at=when(row.submitted_at),
            updated_at=as_utc(row.updated_at),
            next_attempt_at=when(row.next_attempt_at),
            parameters=tuple((str(n), str(v)) for n, v in json.loads(row.parameters)) if row.parameters else (),
        )

    def upsert(self, records: Sequence[JobRecord]) -> None:
        """Insert or replace the rows of ``records`` (by key), in one transaction."""
        if not records:
            return
        insert = (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(processing_jobs)
        columns = [c.name for c in processing_jobs.columns if c.name != "key"]
        stmt = insert.on_conflict_do_update(
            index_elements=[processing_jobs.c.key], set_={c: insert.excluded[c] for c in columns}
        )
        with self._begin() as conn:
            for start in range(0, len(records), 500):
                conn.execute(stmt, [self._row(r) for r in records[start : start + 500]])

    def get(self, keys: Iterable[str]) -> dict[str, JobRecord]:
        wanted = sorted(set(keys))
        found: dict[str, JobRecord] = {}
        with self._begin() as conn:
            for start in range(0, len(wanted), 500):
                query = sa.select(processing_jobs).where(processing_jobs.c.key.in_(wanted[start : start + 500]))
                found.update({row.key: self._record(row) for row in conn.execute(query)})
        return found

    def list_jobs(
        self,
        *,
        block_id: str | None = None,
        payload: str | None = None,
        states: Iterable[JobPhase] | None = None,
        run: int | None = None,
        limit: int | None = None,
        key_prefix: str | None = None,
    ) -> list[JobRecord]:
        """Jobs, newest update first, filtered by block, payload, states, run and key prefix (a campaign's)."""
        query = sa.select(processing_jobs).order_by(processing_jobs.c.updated_at.desc(), processing_jobs.c.key)
        if block_id is not None:
            query = query.where(processing_jobs.c.block_id == block_id)
        if payload is not None:
            query = query.where(processing_jobs.c.payload == payload)
        if states is not None:
            query = query.where(processing_jobs.c.state.in_([JobPhase(s).value for s in states]))
        if run is not None:
            query = query.where(processing_jobs.c.run == run)
        if key_prefix is not None:
            query = query.where(processing_jobs.c.key.startswith(key_prefix, autoescape=True))
        if limit is not None:
            query = query.limit(limit)
        with self._begin() as conn:
            return [self._record(row) for row in conn.execute(query)]

    def active(self, block_id: str | None = None) -> list[JobRecord]:
        return self.list_jobs(block_id=block_id, states=ACTIVE_PHASES)

    def counts(self, block_id: str | None = None) -> dict[tuple[str, str], int]:
        """(payload, state) → number of jobs (all blocks, or one)."""
        query = sa.select(processing_jobs.c.payload, processing_jobs.c.state, sa.func.count()).group_by(
            processing_jobs.c.payload, processing_jobs.c.state
        )
        if block_id is not None:
            query = query.where(processing_jobs.c.block_id == block_id)
        with self._begin() as conn:
            return {(payload, state): int(n) for payload, state, n in conn.execute(query)}

    def blocks(self, limit: int = 30) -> list[str]:
        """The block ids that have jobs, newest first."""
        query = (
            sa.select(processing_jobs.c.block_id)
            .group_by(processing_jobs.c.block_id)
            .order_by(processing_jobs.c.block_id.desc())
            .limit(limit)
        )
        with self._begin() as conn:
            return list(conn.execute(query).scalars())
