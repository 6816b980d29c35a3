"""The ``sql`` catalogue: SQLAlchemy Core over SQLite (embedded default) or PostgreSQL (production).

URLs: ``sql+sqlite:///path/to/catalogue.db``, ``sql+postgresql://user@host:5432/db``, or the same without the
``sql+`` prefix. ``postgresql://`` without a driver uses psycopg (3) when installed, else psycopg2.

Tables: ``datasets`` and ``blocks`` (open/closed), ``files`` (one row per LFN with the metadata as indexed
columns: Block → block_id, Type → data_type, Run → run_number, Stream → stream) and ``replicas`` (file × site:
state, last error, attempts, updated_at) and ``lineage`` (parent → child, with the child's type so "the RAW
files of a day without an RTRAW child" is one indexed anti-join). Bulk writes are chunked multi-row ``INSERT … ON CONFLICT``.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from rawflow.catalogue.base import (
    BlockClosedError,
    BlockRecord,
    FileRecord,
    RegisterResult,
    ReplicaInfo,
    ReplicaState,
    UnknownParentError,
    as_utc,
    check_metadata_keys,
    chunked,
    split_repeats,
    utc_now,
    validate_files,
    validate_lineage,
)
from rawflow.errors import PermanentError, TransientError
from rawflow.naming import DataType, block_name, dataset_name

CHUNK = 1000  # rows per statement: well under SQLite's bound-parameter limit for 9 columns
MAX_LFN_LENGTH = 1024

metadata_obj = sa.MetaData()

datasets = sa.Table(
    "datasets",
    metadata_obj,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("data_type", sa.String(16), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

blocks = sa.Table(
    "blocks",
    metadata_obj,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("data_type", sa.String(16), nullable=False),
    sa.Column("block_id", sa.String(8), nullable=False),
    sa.Column("dataset", sa.String(64), sa.ForeignKey("datasets.name"), nullable=False, index=True),
    sa.Column("is_open", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Index("ix_blocks_type_open", "data_type", "is_open"),
)

files = sa.Table(
    "files",
    metadata_obj,
    sa.Column("lfn", sa.String(MAX_LFN_LENGTH), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("adler32", sa.String(8), nullable=False),
    sa.Column("block", sa.String(64), sa.ForeignKey("blocks.name"), nullable=False, index=True),
    sa.Column("data_type", sa.String(16), nullable=False),
    sa.Column("block_id", sa.String(8), nullable=False),
    sa.Column("run_number", sa.BigInteger, nullable=False, index=True),
    sa.Column("stream", sa.String(255), nullable=False, index=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_files_block_id_type", "block_id", "data_type"),
)

replicas = sa.Table(
    "replicas",
    metadata_obj,
    sa.Column("lfn", sa.String(MAX_LFN_LENGTH), sa.ForeignKey("files.lfn"), primary_key=True),
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_replicas_site_state", "site", "state"),
    # The Rawflow view's throughput and error-rate series scan replicas by update time.
    sa.Index("ix_replicas_updated_at", "updated_at"),
)

lineage = sa.Table(
    "lineage",
    metadata_obj,
    sa.Column("parent", sa.String(MAX_LFN_LENGTH), sa.ForeignKey("files.lfn"), primary_key=True),
    sa.Column("child", sa.String(MAX_LFN_LENGTH), sa.ForeignKey("files.lfn"), primary_key=True),
    sa.Column("child_type", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_lineage_parent_child_type", "parent", "child_type"),
    sa.Index("ix_lineage_child", "child"),
)

_METADATA_COLUMNS = {
    "Block": files.c.block_id,
    "Type": files.c.data_type,
    "Run": files.c.run_number,
    "Stream": files.c.stream,
}


def engine_url(url: str) -> str:
    """Strip the ``sql+`` prefix and choose an installed Postgres driver when none is named."""
    if url.startswith("sql+"):
        url = url[len("sql+") :]
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise PermanentError(f"not a database URL: {url!r} (expected e.g. sql+sqlite:///path or sql+postgresql://…)")
    if scheme in ("postgresql", "postgres"):
        driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
        return f"postgresql+{driver}://{rest}"
    return url


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Connection settings for every SQLite database Rawflow writes (catalogue, quarantine, monitoring)."""
    # WAL lets readers run beside the writer; the busy timeout makes concurrent writers wait, not fail.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except sa.exc.OperationalError as exc:
        raise TransientError(f"catalogue database unavailable or busy: {exc.orig}") from exc
    except sa.exc.IntegrityError as exc:
        raise PermanentError(f"catalogue integrity error: {exc.orig}") from exc


class SqlCatalogue:
    """The catalogue in a relational database (one transaction per call)."""

    max_lfn_length = MAX_LFN_LENGTH

    def __init__(self, url: str, *, create: bool = True, echo: bool = False) -> None:
        self.url = engine_url(url)
        self._engine: Engine = sa.create_engine(self.url, echo=echo, pool_pre_ping=True)
        self._dialect = self._engine.dialect.name
        if self._dialect == "sqlite":
            sa.event.listen(self._engine, "connect", sqlite_pragmas)
        elif self._dialect != "postgresql":
            raise PermanentError(f"the sql catalogue supports SQLite and PostgreSQL, not {self._dialect}")
        if create:
            self.create_schema()

    def __repr__(self) -> str:
        return f"SqlCatalogue({self._engine.url.render_as_string(hide_password=True)})"

    def create_schema(self) -> None:
        """Create the tables and indexes that are missing (idempotent)."""
        with _database_errors():
            metadata_obj.create_all(self._engine, checkfirst=True)

    def close(self) -> None:
        self._engine.dispose()

    def _insert(self, table: sa.Table) -> Any:
        return (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(table)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with _database_errors(), self._engine.begin() as conn:
            yield conn

    # -- registration ---------------------------------------------------------------------------------------

    def register_files(
        self,
        files_: Sequence[FileRecord],
        *,
        site: str,
        state: ReplicaState = ReplicaState.VALIDATED,
        parents: Mapping[str, Sequence[str]] | None = None,
    ) -> RegisterResult:
        validate_files(files_, self.max_lfn_length)
        links = validate_lineage(files_, parents)
        unique, repeats = split_repeats(files_)
        result = RegisterResult(conflicts=list(repeats))
        if not unique:
            return result
        now = utc_now()
        with self._transaction() as conn:
            self._ensure_blocks(conn, unique, now)
            added = self._insert_new_files(conn, unique, now)
            others = [f for f in unique if f.lfn not in added]
            known = self._checksums(conn, [f.lfn for f in others])
            for record in others:
                if known[record.lfn] == record.adler32:
                    result.existing.append(record.lfn)
                else:
                    result.conflicts.append((record.lfn, known[record.lfn], record.adler32))
            self._refuse_closed_blocks(conn, {f.block for f in unique if f.lfn in added})
            result.added = [f.lfn for f in unique if f.lfn in added]
            self._ensure_replicas(conn, result.added + result.existing, site, state, now)
            registered = set(result.added) | set(result.existing)
            self._add_lineage(conn, [(p, c) for p, c in links if c in registered], unique, now)
        return result

    def _add_lineage(
        self, conn: Connection, links: Sequence[tuple[str, str]], records: Sequence[FileRecord], now: datetime
    ) -> None:
        if not links:
            return
        known = self._checksums(conn, sorted({parent for parent, _ in links}))
        for parent, child in links:
            if parent not in known:
                raise UnknownParentError(child, parent)  # leaving the transaction rolls every insert back
        types = {f.lfn: f.data_type.value for f in records}
        stmt = self._insert(lineage).on_conflict_do_nothing().returning(lineage.c.child)
        for chunk in chunked(links, CHUNK):
            rows = [{"parent": p, "child": c, "child_type": types[c], "created_at": now} for p, c in chunk]
            conn.execute(stmt, rows).all()

    # -- lineage --------------------------------------------------------------------------------------------

    def children(self, lfns: Iterable[str], data_type: DataType | None = None) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        with self._transaction() as conn:
            for chunk in chunked(sorted(set(lfns)), CHUNK):
                query = sa.select(lineage.c.parent, lineage.c.child).where(lineage.c.parent.in_(chunk))
                if data_type is not None:
                    query = query.where(lineage.c.child_type == DataType.parse(data_type).value)
                for row in conn.execute(query.order_by(lineage.c.parent, lineage.c.child)):
                    found.setdefault(row.parent, []).append(row.child)
        return found

    def parents(self, lfns: Iterable[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        with self._transaction() as conn:
            for chunk in chunked(sorted(set(lfns)), CHUNK):
                query = (
                    sa.select(lineage.c.child, lineage.c.parent)
                    .where(lineage.c.child.in_(chunk))
                    .order_by(lineage.c.child, lineage.c.parent)
                )
                for row in conn.execute(query):
                    found.setdefault(row.child, []).append(row.parent)
        return found

    def files_without_children(self, data_type: DataType, block_id: str, child_type: DataType) -> list[FileRecord]:
        has_child = (
            sa.select(lineage.c.parent)
            .where(lineage.c.parent == files.c.lfn, lineage.c.child_type == DataType.parse(child_type).value)
            .exists()
        )
        query = (
            sa.select(files)
            .where(files.c.block == block_name(DataType.parse(data_type), block_id), sa.not_(has_child))
            .order_by(files.c.lfn)
        )
        with self._transaction() as conn:
            return [self._record(row) for row in conn.execute(query)]

    def _ensure_blocks(self, conn: Connection, records: Sequence[FileRecord], now: datetime) -> None:
        wanted = {(f.data_type, f.block_id) for f in records}
        dataset_rows = {dataset_name(t, b): {"name": dataset_name(t, b), "data_type": t.value} for t, b in wanted}
        conn.execute(
            self._insert(datasets).on_conflict_do_nothing(),
            [dict(row, created_at=now) for row in dataset_rows.values()],
        )
        block_rows = [
            {
                "name": block_name(t, b),
                "data_type": t.value,
                "block_id": b,
                "dataset": dataset_name(t, b),
                "is_open": True,
                "created_at": now,
            }
            for t, b in sorted(wanted)
        ]
        conn.execute(self._insert(blocks).on_conflict_do_nothing(), block_rows)

    def _insert_new_files(self, conn: Connection, records: Sequence[FileRecord], now: datetime) -> set[str]:
        added: set[str] = set()
        stmt = self._insert(files).on_conflict_do_nothing().returning(files.c.lfn)
        for chunk in chunked(records, CHUNK):
            rows = [
                {
                    "lfn": f.lfn,
                    "size": f.size,
                    "adler32": f.adler32,
                    "block": f.block,
                    "data_type": f.data_type.value,
                    "block_id": f.block_id,
                    "run_number": f.run_number,
                    "stream": f.stream,
                    "received_at": f.received_at,
                    "registered_at": now,
                }
                for f in chunk
            ]
            added.update(conn.execute(stmt, rows).scalars())
        return added

    def _checksums(self, conn: Connection, lfns: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in chunked(lfns, CHUNK):
            query = sa.select(files.c.lfn, files.c.adler32).where(files.c.lfn.in_(chunk))
            found.update({row.lfn: row.adler32 for row in conn.execute(query)})
        return found

    def _refuse_closed_blocks(self, conn: Connection, names: set[str]) -> None:
        if not names:
            return
        query = sa.select(blocks.c.name).where(blocks.c.name.in_(sorted(names)), sa.not_(blocks.c.is_open))
        closed = conn.execute(query).scalars().first()
        if closed is not None:
            raise BlockClosedError(closed)  # leaving the transaction rolls every insert back

    def _ensure_replicas(
        self, conn: Connection, lfns: Sequence[str], site: str, state: ReplicaState, now: datetime
    ) -> None:
        attempts = 1 if state is ReplicaState.COPYING else 0
        # RETURNING makes SQLAlchemy batch the rows into multi-VALUES statements (psycopg2's executemany is
        # one round trip per row).
        stmt = self._insert(replicas).on_conflict_do_nothing().returning(replicas.c.lfn)
        for chunk in chunked(lfns, CHUNK):
            rows = [
                {"lfn": lfn, "site": site, "state": state.value, "error": None, "attempts": attempts, "updated_at": now}
                for lfn in chunk
            ]
            conn.execute(stmt, rows).all()

    # -- files ----------------------------------------------------------------------------------------------

    @staticmethod
    def _record(row: Any) -> FileRecord:
        return FileRecord(
            lfn=row.lfn,
            size=int(row.size),
            adler32=row.adler32,
            data_type=DataType(row.data_type),
            block_id=row.block_id,
            run_number=int(row.run_number),
            stream=row.stream,
            received_at=as_utc(row.received_at),
        )

    def get_file(self, lfn: str) -> FileRecord | None:
        return self.get_files([lfn]).get(lfn)

    def get_files(self, lfns: Iterable[str]) -> dict[str, FileRecord]:
        wanted = sorted(set(lfns))
        found: dict[str, FileRecord] = {}
        with self._transaction() as conn:
            for chunk in chunked(wanted, CHUNK):
                for row in conn.execute(sa.select(files).where(files.c.lfn.in_(chunk))):
                    found[row.lfn] = self._record(row)
        return found

    def files_in_block(self, data_type: DataType, block_id: str) -> list[FileRecord]:
        query = sa.select(files).where(files.c.block == block_name(data_type, block_id)).order_by(files.c.lfn)
        with self._transaction() as conn:
            return [self._record(row) for row in conn.execute(query)]

    def query_files(self, **metadata: str | int) -> list[str]:
        check_metadata_keys(metadata)
        query = sa.select(files.c.lfn).order_by(files.c.lfn)
        for key, value in metadata.items():
            column = _METADATA_COLUMNS[key]
            if key == "Run":
                value = int(value)
            elif key == "Type":
                value = DataType.parse(value).value
            query = query.where(column == value)
        with self._transaction() as conn:
            return list(conn.execute(query).scalars())

    # -- replicas -------------------------------------------------------------------------------------------

    def set_replica_state(
        self, lfns: Iterable[str], site: str, state: ReplicaState, *, error: str | None = None
    ) -> int:
        state = ReplicaState(state)
        now = utc_now()
        if state is ReplicaState.COPYING:
            attempts: Any = replicas.c.attempts + sa.case((replicas.c.state != state.value, 1), else_=0)
        else:
            attempts = replicas.c.attempts
        changed = 0
        with self._transaction() as conn:
            for chunk in chunked(sorted(set(lfns)), CHUNK):
                source = sa.select(
                    files.c.lfn,
                    sa.literal(site, sa.String).label("site"),
                    sa.literal(state.value, sa.String).label("state"),
                    sa.literal(error, sa.Text).label("error"),
                    sa.literal(1 if state is ReplicaState.COPYING else 0, sa.Integer).label("attempts"),
                    sa.literal(now, sa.DateTime(timezone=True)).label("updated_at"),
                ).where(files.c.lfn.in_(chunk))
                upsert = self._insert(replicas).from_select(
                    ["lfn", "site", "state", "error", "attempts", "updated_at"], source
                )
                excluded = upsert.excluded
                stmt = upsert.on_conflict_do_update(
                    index_elements=[replicas.c.lfn, replicas.c.site],
                    set_={
                        "state": excluded.state,
                        "error": excluded.error,
                        "attempts": attempts,
                        "updated_at": excluded.updated_at,
                    },
                    where=sa.or_(
                        replicas.c.state.is_distinct_from(excluded.state),
                        replicas.c.error.is_distinct_from(excluded.error),
                    ),
                )
                changed += conn.execute(stmt).rowcount
        return changed

    def replica_states(
        self,
        lfns: Iterable[str] | None = None,
        *,
        block: tuple[DataType, str] | None = None,
        site: str | None = None,
    ) -> dict[str, dict[str, ReplicaInfo]]:
        if (lfns is None) == (block is None):
            raise ValueError("give either lfns or block")
        base = sa.select(replicas)
        if site is not None:
            base = base.where(replicas.c.site == site)
        queries: list[Any] = []
        if block is not None:
            in_block = sa.select(files.c.lfn).where(files.c.block == block_name(*block))
            queries.append(base.where(replicas.c.lfn.in_(in_block)))
        else:
            assert lfns is not None
            queries.extend(base.where(replicas.c.lfn.in_(chunk)) for chunk in chunked(sorted(set(lfns)), CHUNK))
        states: dict[str, dict[str, ReplicaInfo]] = {}
        with self._transaction() as conn:
            for query in queries:
                for row in conn.execute(query):
                    states.setdefault(row.lfn, {})[row.site] = ReplicaInfo(
                        state=ReplicaState(row.state),
                        error=row.error,
                        updated_at=as_utc(row.updated_at),
                        attempts=int(row.attempts),
                    )
        return states

    def block_summary(self, data_type: DataType, block_id: str) -> dict[str, dict[ReplicaState, int]]:
        query = (
            sa.select(replicas.c.site, replicas.c.state, sa.func.count())
            .join(files, files.c.lfn == replicas.c.lfn)
            .where(files.c.block == block_name(data_type, block_id))
            .group_by(replicas.c.site, replicas.c.state)
        )
        summary: dict[str, dict[ReplicaState, int]] = {}
        with self._transaction() as conn:
            for site, state, count in conn.execute(query):
                summary.setdefault(site, {})[ReplicaState(state)] = int(count)
        return summary

    # -- blocks and datasets --------------------------------------------------------------------------------

    def _block_query(self) -> Any:
        totals = (
            sa.select(
                files.c.block,
                sa.func.count().label("n_files"),
                sa.func.coalesce(sa.func.sum(files.c.size), 0).label("n_bytes"),
            )
            .group_by(files.c.block)
            .subquery()
        )
        return (
            sa.select(blocks, totals.c.n_files, totals.c.n_bytes)
            .outerjoin(totals, totals.c.block == blocks.c.name)
            .order_by(blocks.c.name)
        )

    @staticmethod
    def _block(row: Any) -> BlockRecord:
        return BlockRecord(
            data_type=DataType(row.data_type),
            block_id=row.block_id,
            is_open=bool(row.is_open),
            files=int(row.n_files or 0),
            bytes=int(row.n_bytes or 0),
            created_at=as_utc(row.created_at),
            closed_at=as_utc(row.closed_at) if row.closed_at is not None else None,
        )

    def get_block(self, data_type: DataType, block_id: str) -> BlockRecord | None:
        query = self._block_query().where(blocks.c.name == block_name(data_type, block_id))
        with self._transaction() as conn:
            row = conn.execute(query).first()
        return self._block(row) if row is not None else None

    def list_blocks(self, data_type: DataType | None = None, *, is_open: bool | None = None) -> list[BlockRecord]:
        query = self._block_query()
        if data_type is not None:
            query = query.where(blocks.c.data_type == DataType.parse(data_type).value)
        if is_open is not None:
            query = query.where(blocks.c.is_open == is_open)
        with self._transaction() as conn:
            return [self._block(row) for row in conn.execute(query)]

    def close_block(self, data_type: DataType, block_id: str) -> bool:
        name = block_name(data_type, block_id)
        with self._transaction() as conn:
            stmt = (
                sa.update(blocks)
                .where(blocks.c.name == name, blocks.c.is_open)
                .values(is_open=False, closed_at=utc_now())
            )
            if conn.execute(stmt).rowcount:
                return True
            if conn.execute(sa.select(blocks.c.name).where(blocks.c.name == name)).first() is None:
                raise PermanentError(f"no block {name} in the catalogue")
        return False

    def datasets(self, data_type: DataType | None = None) -> list[str]:
        query = sa.select(datasets.c.name).order_by(datasets.c.name)
        if data_type is not None:
            query = query.where(datasets.c.data_type == DataType.parse(data_type).value)
        with self._transaction() as conn:
            return list(conn.execute(query).scalars())

    def blocks_in_dataset(self, dataset: str) -> list[str]:
        query = sa.select(blocks.c.name).where(blocks.c.dataset == dataset).order_by(blocks.c.name)
        with self._transaction() as conn:
            return list(conn.execute(query).scalars())
