"""What the shifters watch: each block's progress per site, file-level drill-down, throughput, alerts, Kafka lag.

The block operator records every round's Assigned / Processed / Problematic per block × site in the
``block_site_status`` table (:func:`record_progress`), so the matrix view reads a few hundred rows instead of
counting millions of replicas. The drill-down and the time series read the ``sql`` catalogue's ``files`` and
``replicas`` tables when they live in the same database; with another catalogue backend the drill-down goes
through the :class:`~rawflow.catalogue.base.Catalogue` interface (:func:`drill_down_from_catalogue`).

A site that turns Problematic gets ``problematic_since``; once it has been Problematic longer than the alert
deadline, :func:`send_due_alerts` e-mails the shifters once (``alerted_at``). A site that recovers clears
both, so a later episode alerts again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from rawflow.catalogue.base import Catalogue, ReplicaState, as_utc, utc_now
from rawflow.catalogue.sql import engine_url, sqlite_pragmas
from rawflow.catalogue.sql import files as files_table
from rawflow.catalogue.sql import replicas as replicas_table
from rawflow.errors import PermanentError, TransientError
from rawflow.naming import DataType, block_id_for, block_name, parse_block_id
from rawflow.notify import Notifier
from rawflow.sites import Site
from rawflow.validation import SiteProgress

log = logging.getLogger(__name__)

PROCESSED, PROBLEMATIC, ASSIGNED = "Processed", "Problematic", "Assigned"
GOOD_STATES = (ReplicaState.VALIDATED.value, ReplicaState.ARCHIVED.value)
PROBLEM_STATES = (ReplicaState.BAD.value, ReplicaState.COPYING.value, ReplicaState.REGISTERED.value)
MAX_ERROR_LENGTH = 2000

metadata = sa.MetaData()

block_site_status = sa.Table(
    "block_site_status",
    metadata,
    sa.Column("block", sa.String(64), primary_key=True),
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("data_type", sa.String(16), nullable=False),
    sa.Column("block_id", sa.String(8), nullable=False),
    sa.Column("assigned", sa.Integer, nullable=False),
    sa.Column("processed", sa.Integer, nullable=False),
    sa.Column("problematic", sa.Integer, nullable=False),
    sa.Column("pending", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("problematic_since", sa.DateTime(timezone=True)),
    sa.Column("alerted_at", sa.DateTime(timezone=True)),
    sa.Index("ix_block_site_status_day", "block_id", "data_type"),
    sa.Index("ix_block_site_status_problematic", "problematic_since"),
)


def status_of(assigned: int, processed: int, problematic: int) -> str:
    """The shifters' word for a block at a site (the same rule as :class:`SiteProgress`)."""
    if problematic:
        return PROBLEMATIC
    return PROCESSED if processed == assigned else ASSIGNED


# -- what the queries return ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteCell:
    """One block at one site, as last recorded by the block operator."""

    block: str
    data_type: str
    block_id: str
    site: str
    assigned: int
    processed: int
    problematic: int
    pending: int
    bytes: int
    status: str
    last_error: str | None
    updated_at: datetime
    problematic_since: datetime | None = None
    alerted_at: datetime | None = None

    @property
    def processed_pct(self) -> float:
        return 100.0 * self.processed / self.assigned if self.assigned else 100.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "block": self.block,
            "data_type": self.data_type,
            "block_id": self.block_id,
            "site": self.site,
            "assigned": self.assigned,
            "processed": self.processed,
            "problematic": self.problematic,
            "pending": self.pending,
            "processed_pct": round(self.processed_pct, 2),
            "bytes": self.bytes,
            "status": self.status,
            "last_error": self.last_error,
            "updated_at": self.updated_at.isoformat(),
            "problematic_since": self.problematic_since.isoformat() if self.problematic_since else None,
            "alerted_at": self.alerted_at.isoformat() if self.alerted_at else None,
        }


@dataclass(frozen=True, slots=True)
class MatrixRow:
    block: str
    data_type: str
    block_id: str
    cells: Mapping[str, SiteCell]

    @property
    def status(self) -> str:
        """The worst status over the block's sites."""
        statuses = {c.status for c in self.cells.values()}
        return next((s for s in (PROBLEMATIC, ASSIGNED) if s in statuses), PROCESSED)


@dataclass(frozen=True, slots=True)
class Matrix:
    """Block × site for the last ``days`` receiving days (newest block first)."""

    days: int
    first_block_id: str
    sites: Sequence[str]
    rows: Sequence[MatrixRow]


@dataclass(frozen=True, slots=True)
class ReplicaView:
    state: str
    error: str | None
    attempts: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class FileView:
    lfn: str
    size: int
    adler32: str
    replicas: Mapping[str, ReplicaView]


@dataclass(frozen=True, slots=True)
class BlockDrillDown:
    """A page of a block's files with their replica state per site (files with a problem first if asked)."""

    block: str
    data_type: str
    block_id: str
    total_files: int
    matching_files: int
    offset: int
    sites: Sequence[str]
    files: Sequence[FileView]
    status: Mapping[str, SiteCell] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """Replicas that reached their current state in one time bucket at one site."""

    bucket: datetime
    site: str
    good_files: int
    good_bytes: int
    bad_files: int

    @property
    def error_rate(self) -> float:
        total = self.good_files + self.bad_files
        return self.bad_files / total if total else 0.0


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """Committed offset against the watermarks the broker reports. Tansu 0.6 reports a partition's high
    watermark as its last record batch's base offset + 1, so with batched producers the lag it shows is a
    lower bound (a Kafka broker reports the exact end)."""

    topic: str
    partition: int
    committed: int | None  # None: the group never committed on this partition
    low: int
    high: int

    @property
    def lag(self) -> int:
        start = self.committed if self.committed is not None else self.low
        return max(0, self.high - max(start, self.low))


@dataclass(frozen=True, slots=True)
class KafkaStatus:
    bootstrap: str
    group: str
    reachable: bool
    error: str | None
    partitions: Sequence[PartitionLag]

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)


# -- the store ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except sa.exc.OperationalError as exc:
        raise TransientError(f"monitoring database unavailable or busy: {exc.orig}") from exc


class MonitoringStore:
    """The ``block_site_status`` table and the read-only monitoring queries, over SQLite or PostgreSQL."""

    def __init__(self, url_or_engine: str | Engine, *, create: bool = True) -> None:
        if isinstance(url_or_engine, Engine):
            self.engine = url_or_engine
        else:
            self.engine = sa.create_engine(engine_url(url_or_engine), pool_pre_ping=True)
            if self.engine.dialect.name == "sqlite":
                sa.event.listen(self.engine, "connect", sqlite_pragmas)
        self._dialect = self.engine.dialect.name
        if self._dialect not in ("sqlite", "postgresql"):
            raise PermanentError(f"monitoring supports SQLite and PostgreSQL, not {self._dialect}")
        self._has_catalogue: bool | None = None
        if create:
            self.create_schema()

    def __repr__(self) -> str:
        return f"MonitoringStore({self.engine.url.render_as_string(hide_password=True)})"

    def create_schema(self) -> None:
        with _database_errors():
            metadata.create_all(self.engine, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        with _database_errors(), self.engine.begin() as conn:
            yield conn

    @property
    def has_catalogue_tables(self) -> bool:
        """Whether the sql catalogue's ``files`` and ``replicas`` tables live in this database (a "no" is
        looked up again next time: the catalogue may create its tables after the view started)."""
        if not self._has_catalogue:
            with _database_errors():
                inspector = sa.inspect(self.engine)
                self._has_catalogue = inspector.has_table("files") and inspector.has_table("replicas")
        return self._has_catalogue

    # -- writing --------------------------------------------------------------------------------------------

    def record(
        self,
        data_type: DataType | str,
        block_id: str,
        site: str,
        *,
        assigned: int,
        processed: int,
        problematic: int,
        bytes_done: int,
        last_error: str | None = None,
        now: datetime | None = None,
    ) -> None:
        """Upsert one block × site. ``problematic_since`` starts when Problematic begins and is kept while it
        lasts; leaving Problematic clears it and ``alerted_at``."""
        kind = DataType.parse(data_type)
        parse_block_id(block_id)
        if min(assigned, processed, problematic, bytes_done) < 0 or processed + problematic > assigned:
            raise ValueError(
                f"inconsistent counts: assigned {assigned}, processed {processed}, problematic {problematic}"
            )
        now = now or utc_now()
        row = {
            "block": block_name(kind, block_id),
            "site": site,
            "data_type": kind.value,
            "block_id": block_id,
            "assigned": assigned,
            "processed": processed,
            "problematic": problematic,
            "pending": assigned - processed - problematic,
            "bytes": bytes_done,
            "status": status_of(assigned, processed, problematic),
            "last_error": last_error[:MAX_ERROR_LENGTH] if last_error else None,
            "updated_at": now,
            "problematic_since": now if problematic else None,
            "alerted_at": None,
        }
        insert = (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(block_site_status)
        table, new = block_site_status.c, insert.excluded
        still_problematic = new.problematic > 0
        stmt = insert.values(row).on_conflict_do_update(
            index_elements=[table.block, table.site],
            set_={
                "assigned": new.assigned,
                "processed": new.processed,
                "problematic": new.problematic,
                "pending": new.pending,
                "bytes": new.bytes,
                "status": new.status,
                "last_error": new.last_error,
                "updated_at": new.updated_at,
                "problematic_since": sa.case(
                    (still_problematic, sa.func.coalesce(table.problematic_since, new.updated_at)), else_=sa.null()
                ),
                "alerted_at": sa.case((still_problematic, table.alerted_at), else_=sa.null()),
            },
        )
        with self._begin() as conn:
            conn.execute(stmt)

    # -- the matrix -----------------------------------------------------------------------------------------

    def matrix(
        self, days: int = 7, *, data_type: DataType | str | None = None, today: datetime | None = None
    ) -> Matrix:
        """Every recorded block × site of the last ``days`` receiving days (today included)."""
        if days < 1:
            raise ValueError("days must be at least 1")
        first = block_id_for((today or utc_now()).date() - timedelta(days=days - 1))
        query = sa.select(block_site_status).where(block_site_status.c.block_id >= first)
        if data_type is not None:
            query = query.where(block_site_status.c.data_type == DataType.parse(data_type).value)
        query = query.order_by(block_site_status.c.block_id.desc(), block_site_status.c.data_type)
        rows: dict[str, dict[str, SiteCell]] = {}
        sites: set[str] = set()
        with self._begin() as conn:
            for raw in conn.execute(query).mappings():
                cell = _cell(raw)
                rows.setdefault(cell.block, {})[cell.site] = cell
                sites.add(cell.site)
        matrix_rows = [
            MatrixRow(block, next(iter(cells.values())).data_type, next(iter(cells.values())).block_id, cells)
            for block, cells in rows.items()
        ]
        return Matrix(days=days, first_block_id=first, sites=sorted(sites), rows=matrix_rows)

    def block_cells(self, data_type: DataType | str, block_id: str) -> dict[str, SiteCell]:
        name = block_name(DataType.parse(data_type), block_id)
        query = sa.select(block_site_status).where(block_site_status.c.block == name).order_by(block_site_status.c.site)
        with self._begin() as conn:
            return {cell.site: cell for cell in (_cell(r) for r in conn.execute(query).mappings())}

    def totals_by_site(self) -> dict[str, dict[str, int]]:
        """site → summed assigned / processed / problematic / pending / bytes over every recorded block."""
        c = block_site_status.c
        query = sa.select(
            c.site,
            sa.func.sum(c.assigned),
            sa.func.sum(c.processed),
            sa.func.sum(c.problematic),
            sa.func.sum(c.pending),
            sa.func.sum(c.bytes),
        ).group_by(c.site)
        keys = ("assigned", "processed", "problematic", "pending", "bytes")
        with self._begin() as conn:
            return {row[0]: {k: int(v or 0) for k, v in zip(keys, row[1:], strict=True)} for row in conn.execute(query)}

    # -- the drill-down -------------------------------------------------------------------------------------

    def drill_down(
        self,
        data_type: DataType | str,
        block_id: str,
        *,
        problems_only: bool = False,
        limit: int = 200,
        offset: int = 0,
        search: str | None = None,
        site: str | None = None,
        failed_only: bool = False,
        expected_at: Sequence[str] = (),
        assigned_at: Sequence[Site] = (),
    ) -> BlockDrillDown:
        """A page of the block's files (by LFN) with every replica's state, last error and attempts, read from
        the sql catalogue's tables. ``problems_only``: files with a replica that is not validated/archived, or
        without a replica at one of ``expected_at`` (sites that hold every file: not copied yet) or at one of
        ``assigned_at`` (partial-share sites, with the data type's share) whose share includes them. ``search``:
        LFNs containing the text; ``site``: problems at that site only; ``failed_only``: a bad replica."""
        if not self.has_catalogue_tables:
            raise PermanentError(
                "the catalogue tables are not in the monitoring database: use drill_down_from_catalogue"
            )
        kind = DataType.parse(data_type)
        name = block_name(kind, block_id)
        f, r = files_table.c, replicas_table.c
        in_block = f.block == name
        # EXISTS probes the replicas' primary key (lfn, site) per file of the block: no scan of other blocks.
        at_site = (r.site == site,) if site else ()
        bad_states = (ReplicaState.BAD.value,) if failed_only else PROBLEM_STATES
        problem: Any = sa.exists().where(r.lfn == f.lfn, r.state.in_(bad_states), *at_site)
        if not failed_only:
            missing = [s for s in expected_at if not site or s == site]
            for name_ in missing:
                problem = sa.or_(problem, ~sa.exists().where(r.lfn == f.lfn, r.site == name_))
            partial = [s for s in assigned_at if not site or s.name == site]
            if partial:
                # A share is a function of the LFN (crc32), not a column: list the block's files without a replica
                # at the site, keep those its share includes (a few thousand names on a real day).
                not_copied = self._assigned_without_replica(name, partial)
                if not_copied:
                    problem = sa.or_(problem, f.lfn.in_(sorted(not_copied)))
        filters = [in_block]
        if problems_only or failed_only:
            filters.append(problem)
        if search:
            filters.append(f.lfn.contains(search, autoescape=True))
        wanted = sa.and_(*filters)
        filtered = len(filters) > 1
        page = sa.select(f.lfn, f.size, f.adler32).where(wanted).order_by(f.lfn).limit(limit).offset(offset)
        with self._begin() as conn:
            total = int(conn.execute(sa.select(sa.func.count()).select_from(files_table).where(in_block)).scalar_one())
            matching_count = (
                int(conn.execute(sa.select(sa.func.count()).select_from(files_table).where(wanted)).scalar_one())
                if filtered
                else total
            )
            page_rows = conn.execute(page).all()
            lfns = [row.lfn for row in page_rows]
            states: dict[str, dict[str, ReplicaView]] = {}
            if lfns:
                for row in conn.execute(sa.select(replicas_table).where(r.lfn.in_(lfns))):
                    states.setdefault(row.lfn, {})[row.site] = ReplicaView(
                        row.state, row.error, int(row.attempts), as_utc(row.updated_at)
                    )
        status = self.block_cells(kind, block_id)
        sites = sorted({site for by_site in states.values() for site in by_site} | set(status))
        files = [FileView(row.lfn, int(row.size), row.adler32, states.get(row.lfn, {})) for row in page_rows]
        return BlockDrillDown(
            block=name,
            data_type=kind.value,
            block_id=block_id,
            total_files=total,
            matching_files=matching_count,
            offset=offset,
            sites=sites,
            files=files,
            status=status,
        )

    def _assigned_without_replica(self, block: str, partial: Sequence[Site]) -> set[str]:
        f, r = files_table.c, replicas_table.c
        lfns: set[str] = set()
        with self._begin() as conn:
            for partial_site in partial:
                rows = conn.execute(
                    sa.select(f.lfn).where(
                        f.block == block, ~sa.exists().where(r.lfn == f.lfn, r.site == partial_site.name)
                    )
                )
                lfns.update(row.lfn for row in rows if partial_site.keeps(row.lfn))
        return lfns

    # -- time series ----------------------------------------------------------------------------------------

    def time_series(self, since: datetime, bucket: timedelta = timedelta(hours=1)) -> list[SeriesPoint]:
        """Per bucket and site: replicas that became good (validated/archived: files and bytes) and bad.

        Read from each replica's current state and ``updated_at``, so a replica counts once, when it reached
        the state it is in now. Empty when the catalogue tables are elsewhere (another backend)."""
        if not self.has_catalogue_tables:
            return []
        seconds = int(bucket.total_seconds())
        if seconds < 1:
            raise ValueError("bucket must be at least one second")
        r, f = replicas_table.c, files_table.c
        if self._dialect == "postgresql":
            epoch: Any = sa.cast(sa.func.floor(sa.extract("epoch", r.updated_at) / seconds), sa.BigInteger) * seconds
        else:
            epoch = sa.cast(sa.func.strftime("%s", r.updated_at), sa.Integer) // seconds * seconds
        bucket_col = epoch.label("bucket")
        is_good = r.state.in_(GOOD_STATES)
        query = (
            sa.select(
                bucket_col,
                r.site,
                sa.func.sum(sa.case((is_good, 1), else_=0)),
                sa.func.sum(sa.case((is_good, f.size), else_=0)),
                sa.func.sum(sa.case((r.state == ReplicaState.BAD.value, 1), else_=0)),
            )
            .join(files_table, f.lfn == r.lfn)
            .where(r.updated_at >= as_utc(since), r.state.in_((*GOOD_STATES, ReplicaState.BAD.value)))
            .group_by(bucket_col, r.site)
            .order_by(bucket_col, r.site)
        )
        with self._begin() as conn:
            return [
                SeriesPoint(datetime.fromtimestamp(int(b), UTC), site, int(good or 0), int(nbytes or 0), int(bad or 0))
                for b, site, good, nbytes, bad in conn.execute(query)
            ]

    def replica_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(site, state) → (files, bytes) over the whole catalogue (for the Prometheus metrics)."""
        if not self.has_catalogue_tables:
            return {}
        r, f = replicas_table.c, files_table.c
        query = (
            sa.select(r.site, r.state, sa.func.count(), sa.func.coalesce(sa.func.sum(f.size), 0))
            .join(files_table, f.lfn == r.lfn)
            .group_by(r.site, r.state)
        )
        with self._begin() as conn:
            return {(site, state): (int(n), int(b)) for site, state, n, b in conn.execute(query)}

    # -- alerts ---------------------------------------------------------------------------------------------

    def due_alerts(self, deadline: timedelta, *, now: datetime | None = None) -> list[SiteCell]:
        """Block × site Problematic for longer than ``deadline`` and not alerted yet (oldest first)."""
        cutoff = (now or utc_now()) - deadline
        c = block_site_status.c
        query = (
            sa.select(block_site_status)
            .where(c.problematic > 0, c.problematic_since <= cutoff, c.alerted_at.is_(None))
            .order_by(c.problematic_since, c.block, c.site)
        )
        with self._begin() as conn:
            return [_cell(r) for r in conn.execute(query).mappings()]

    def mark_alerted(self, block: str, site: str, *, now: datetime | None = None) -> bool:
        """Claim the alert of one block × site; False if someone already did (so nobody sends it twice)."""
        c = block_site_status.c
        stmt = (
            sa.update(block_site_status)
            .where(c.block == block, c.site == site, c.alerted_at.is_(None), c.problematic > 0)
            .values(alerted_at=now or utc_now())
        )
        with self._begin() as conn:
            return bool(conn.execute(stmt).rowcount)

    def release_alert(self, block: str, site: str) -> None:
        """Undo a claim whose e-mail could not be sent, so the next run tries again."""
        c = block_site_status.c
        with self._begin() as conn:
            conn.execute(
                sa.update(block_site_status).where(c.block == block, c.site == site).values(alerted_at=sa.null())
            )


def _cell(row: Mapping[Any, Any]) -> SiteCell:
    return SiteCell(
        block=row["block"],
        data_type=row["data_type"],
        block_id=row["block_id"],
        site=row["site"],
        assigned=int(row["assigned"]),
        processed=int(row["processed"]),
        problematic=int(row["problematic"]),
        pending=int(row["pending"]),
        bytes=int(row["bytes"]),
        status=row["status"],
        last_error=row["last_error"],
        updated_at=as_utc(row["updated_at"]),
        problematic_since=as_utc(row["problematic_since"]) if row["problematic_since"] is not None else None,
        alerted_at=as_utc(row["alerted_at"]) if row["alerted_at"] is not None else None,
    )


# -- entry points for the block operator and other backends ---------------------------------------------------


def record_progress(
    db_url: str, data_type: str, block_id: str, site: str, progress: SiteProgress, bytes_done: int
) -> None:
    """Persist one round of the block operator: ``progress`` of ``block_id`` at ``site``, ``bytes_done`` bytes.

    ``db_url``: the sql catalogue's URL (or the rucio backend's ``quarantine_url``)."""
    if progress.site != site:
        raise ValueError(f"progress is for {progress.site}, not {site}")
    last_error = next(iter(progress.reasons.items()), None)
    store = MonitoringStore(db_url)
    try:
        store.record(
            data_type,
            block_id,
            site,
            assigned=progress.assigned,
            processed=progress.processed,
            problematic=progress.problematic,
            bytes_done=bytes_done,
            last_error=f"{last_error[0]}: {last_error[1]}" if last_error else None,
        )
    finally:
        store.close()


def drill_down_from_catalogue(
    catalogue: Catalogue,
    data_type: DataType | str,
    block_id: str,
    *,
    problems_only: bool = False,
    limit: int = 200,
    offset: int = 0,
    status: Mapping[str, SiteCell] | None = None,
    search: str | None = None,
    site: str | None = None,
    failed_only: bool = False,
    expected_at: Sequence[str] = (),
    assigned_at: Sequence[Site] = (),
) -> BlockDrillDown:
    """The same page as :meth:`MonitoringStore.drill_down`, through any catalogue backend (slower: the whole
    block is read)."""
    kind = DataType.parse(data_type)
    records = catalogue.files_in_block(kind, block_id)
    states = catalogue.replica_states(block=(kind, block_id))
    views = [
        FileView(
            rec.lfn,
            rec.size,
            rec.adler32,
            {
                site: ReplicaView(info.state.value, info.error, info.attempts, info.updated_at)
                for site, info in states.get(rec.lfn, {}).items()
            },
        )
        for rec in records
    ]
    bad_states = (ReplicaState.BAD.value,) if failed_only else PROBLEM_STATES

    def has_problem(view: FileView) -> bool:
        states = [(name, rv.state) for name, rv in view.replicas.items() if not site or name == site]
        if any(state in bad_states for _, state in states):
            return True
        if failed_only:
            return False
        if any(s not in view.replicas for s in expected_at if not site or s == site):
            return True
        return any(s.name not in view.replicas and s.keeps(view.lfn) for s in assigned_at if not site or s.name == site)

    matching = [
        v for v in views if (not (problems_only or failed_only) or has_problem(v)) and (not search or search in v.lfn)
    ]
    return BlockDrillDown(
        block=block_name(kind, block_id),
        data_type=kind.value,
        block_id=block_id,
        total_files=len(views),
        matching_files=len(matching),
        offset=offset,
        sites=sorted({site for v in views for site in v.replicas}),
        files=matching[offset : offset + limit],
        status=dict(status or {}),
    )


def alert_message(cell: SiteCell, *, now: datetime | None = None, ui_url: str | None = None) -> tuple[str, str]:
    """Subject and body of the e-mail for one Problematic block × site."""
    since = cell.problematic_since or cell.updated_at
    hours = ((now or utc_now()) - since).total_seconds() / 3600
    subject = f"{cell.block} at {cell.site} Problematic: {cell.problematic} of {cell.assigned} files"
    lines = [
        f"Block {cell.block} at site {cell.site} has been Problematic since {since:%Y-%m-%d %H:%M} UTC ({hours:.1f} h).",
        "",
        f"  assigned     {cell.assigned}",
        f"  processed    {cell.processed} ({cell.processed_pct:.1f} %)",
        f"  problematic  {cell.problematic}",
        f"  pending      {cell.pending}",
        "",
        f"Last error: {cell.last_error or '(none recorded)'}",
        "",
        f"Retry once the cause is fixed: rawflow block retransfer {cell.block_id} --type {cell.data_type} --site {cell.site}",
    ]
    if ui_url:
        lines.append(f"Drill-down: {ui_url.rstrip('/')}/blocks/{cell.block}")
    return subject, "\n".join(lines) + "\n"


def send_due_alerts(
    store: MonitoringStore,
    notifier: Notifier,
    deadline: timedelta,
    *,
    now: datetime | None = None,
    ui_url: str | None = None,
) -> list[SiteCell]:
    """E-mail each block × site Problematic for longer than ``deadline``, once. Returns the ones sent.

    Each alert is claimed before sending, so overlapping runs never send it twice; a failed send gives the
    claim back and the next run retries it. Raises TransientError after trying every alert if any failed."""
    now = now or utc_now()
    sent: list[SiteCell] = []
    failures: list[str] = []
    for cell in store.due_alerts(deadline, now=now):
        if not store.mark_alerted(cell.block, cell.site, now=now):
            continue
        subject, body = alert_message(cell, now=now, ui_url=ui_url)
        try:
            notifier.notify(subject, body)
        except Exception as exc:
            store.release_alert(cell.block, cell.site)
            failures.append(f"{cell.block} at {cell.site}: {exc}")
            continue
        sent.append(cell)
    if failures:
        raise TransientError(f"{len(failures)} alert(s) not sent: {'; '.join(failures)}")
    return sent


# -- Kafka and the quarantine ---------------------------------------------------------------------------------


def kafka_status(
    bootstrap: str,
    group: str,
    topics: Sequence[str],
    *,
    timeout: float = 3.0,
    extra: Mapping[str, Any] | None = None,
) -> KafkaStatus:
    """Committed offsets of ``group`` against the high watermarks of every partition of ``topics``.

    The consumer used for this never subscribes, so it does not join (or rebalance) the receiver's group."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "client.id": "rawflow-monitoring",
        "socket.timeout.ms": int(timeout * 1000),
        "reconnect.backoff.max.ms": 1000,
        **dict(extra or {}),
    }
    consumer = Consumer(config)
    try:
        metadata_ = consumer.list_topics(timeout=timeout)
        wanted = [
            TopicPartition(t, p)
            for t in topics
            if t in metadata_.topics
            for p in sorted(metadata_.topics[t].partitions)
        ]
        committed = (
            {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(wanted, timeout=timeout)}
            if wanted
            else {}
        )
        partitions = []
        for tp in wanted:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
            offset = committed.get((tp.topic, tp.partition), -1)
            partitions.append(
                PartitionLag(tp.topic, tp.partition, offset if offset >= 0 else None, int(low), int(high))
            )
        return KafkaStatus(bootstrap, group, True, None, partitions)
    except KafkaException as exc:
        return KafkaStatus(bootstrap, group, False, str(exc.args[0] if exc.args else exc), [])
    finally:
        consumer.close()


def quarantine_counts(url_or_engine: str | Engine) -> dict[str, int]:
    """reason → messages still quarantined (empty when the receiver has not created its table yet)."""
    from rawflow.quarantine import Quarantine, quarantine_table

    quarantine = Quarantine(url_or_engine)
    with _database_errors():
        if not sa.inspect(quarantine.engine).has_table(quarantine_table.name):
            return {}
    return quarantine.count_by_reason()
