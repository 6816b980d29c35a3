"""The quarantine: every rejected announcement, kept in SQL with its reason, for listing and replay.

Rows are keyed by (topic, partition, offset, sha256 of the payload): a batch re-read after a crash does
not add a second row, while a broker that restarted empty (offsets reused) still gets a new row per message.
The payload is stored up to a cap (a 5 MB junk message is not kept whole); the sha256 is of the full bytes.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from confluent_kafka import Producer
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from rawflow.catalogue.sql import engine_url
from rawflow.errors import PermanentError, TransientError
from rawflow.kafka import DeliveryTracker
from rawflow.messages import Reason

PAYLOAD_CAP = 64 * 1024

metadata = sa.MetaData()

quarantine_table = sa.Table(
    "rawflow_quarantine",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("key", sa.LargeBinary, nullable=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("payload_size", sa.BigInteger, nullable=False),
    sa.Column("payload_sha256", sa.String(64), nullable=False),
    sa.Column("truncated", sa.Boolean, nullable=False),
    sa.Column("reason", sa.String(64), nullable=False, index=True),
    sa.Column("reason_text", sa.Text, nullable=False),
    sa.Column("lfn", sa.String(1024), nullable=True, index=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("topic", "partition", "offset", "payload_sha256", name="uq_rawflow_quarantine_message"),
)


class QuarantineStatus(enum.StrEnum):
    QUARANTINED = "quarantined"
    REPLAYED = "replayed"


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """One rejected message, as the receiver saw it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes | None
    reason: Reason
    text: str
    lfn: str | None = None
    received_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class QuarantinedMessage:
    id: int
    received_at: datetime
    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes
    payload_size: int
    payload_sha256: str
    truncated: bool
    reason: str
    reason_text: str
    lfn: str | None
    status: QuarantineStatus
    replayed_at: datetime | None


class Quarantine:
    def __init__(self, engine: Engine | str, *, payload_cap: int = PAYLOAD_CAP) -> None:
        # The same URL forms as the catalogue (sql+… prefix, an installed Postgres driver picked).
        self.engine = sa.create_engine(engine_url(engine), pool_pre_ping=True) if isinstance(engine, str) else engine
        self.payload_cap = payload_cap

    def create_schema(self) -> None:
        with self._begin() as conn:
            metadata.create_all(conn, tables=[quarantine_table])

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            # Database down or unreachable: worth retrying, the messages stay uncommitted in Kafka.
            raise TransientError(f"quarantine database: {exc.orig}") from exc

    def _row(self, entry: QuarantineEntry) -> dict[str, Any]:
        payload = entry.payload or b""
        return {
            "received_at": entry.received_at or datetime.now(UTC),
            "topic": entry.topic,
            "partition": entry.partition,
            "offset": entry.offset,
            "key": entry.key[:1024] if entry.key is not None else None,
            "payload": payload[: self.payload_cap],
            "payload_size": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "truncated": len(payload) > self.payload_cap,
            "reason": entry.reason.value,
            "reason_text": entry.text,
            "lfn": entry.lfn,
            "status": QuarantineStatus.QUARANTINED.value,
        }

    def add(self, entries: Sequence[QuarantineEntry]) -> int:
        """Insert rows in one transaction, skipping messages already quarantined; returns rows inserted."""
        if not entries:
            return 0
        rows = [self._row(e) for e in entries]
        with self._begin() as conn:
            insert = _insert_ignoring_duplicates(conn).returning(quarantine_table.c.id)
            return len(conn.execute(insert, rows).all())

    def list(
        self,
        *,
        status: QuarantineStatus | None = QuarantineStatus.QUARANTINED,
        reason: Reason | str | None = None,
        topic: str | None = None,
        limit: int = 100,
    ) -> list[QuarantinedMessage]:
        query = sa.select(quarantine_table).order_by(quarantine_table.c.id).limit(limit)
        if status is not None:
            query = query.where(quarantine_table.c.status == status.value)
        if reason is not None:
            query = query.where(quarantine_table.c.reason == Reason(reason).value)
        if topic is not None:
            query = query.where(quarantine_table.c.topic == topic)
        with self._begin() as conn:
            return [_message(row) for row in conn.execute(query).mappings()]

    def count_by_reason(self, *, status: QuarantineStatus | None = QuarantineStatus.QUARANTINED) -> dict[str, int]:
        query = sa.select(quarantine_table.c.reason, sa.func.count()).group_by(quarantine_table.c.reason)
        if status is not None:
            query = query.where(quarantine_table.c.status == status.value)
        with self._begin() as conn:
            return {reason: int(n) for reason, n in conn.execute(query)}

    def replay(self, ids: Sequence[int], producer: Producer, *, topic: str | None = None, timeout: float = 30) -> int:
        """Publish quarantined messages again (to their own topic, or ``topic``) and mark them replayed.

        For a message the online side has fixed at the source (e.g. a file re-copied to the Tier-0).
        Truncated payloads cannot be replayed: the original bytes are not all here.
        """
        with self._begin() as conn:
            rows = [
                _message(r)
                for r in conn.execute(
                    sa.select(quarantine_table).where(quarantine_table.c.id.in_(list(ids)))
                ).mappings()
            ]
        missing = set(ids) - {r.id for r in rows}
        if missing:
            raise PermanentError(f"no quarantined message with id {sorted(missing)}")
        truncated = [r.id for r in rows if r.truncated]
        if truncated:
            raise PermanentError(f"messages {truncated} were stored truncated and cannot be replayed")
        tracker = DeliveryTracker()
        for row in rows:
            producer.produce(topic or row.topic, value=row.payload, key=row.key, on_delivery=tracker)
        tracker.flush(producer, timeout)
        with self._begin() as conn:
            conn.execute(
                sa.update(quarantine_table)
                .where(quarantine_table.c.id.in_([r.id for r in rows]))
                .values(status=QuarantineStatus.REPLAYED.value, replayed_at=datetime.now(UTC))
            )
        return len(rows)


def _insert_ignoring_duplicates(conn: Connection) -> sa.Insert:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(quarantine_table).on_conflict_do_nothing(constraint="uq_rawflow_quarantine_message")
    if dialect == "sqlite":
        return sqlite.insert(quarantine_table).on_conflict_do_nothing()
    raise PermanentError(f"quarantine: unsupported database dialect {dialect!r} (postgresql or sqlite)")


def _message(row: Any) -> QuarantinedMessage:
    received_at = row["received_at"]
    replayed_at = row["replayed_at"]
    return QuarantinedMessage(
        id=int(row["id"]),
        received_at=received_at if received_at.tzinfo else received_at.replace(tzinfo=UTC),
        topic=row["topic"],
        partition=int(row["partition"]),
        offset=int(row["offset"]),
        key=row["key"],
        payload=bytes(row["payload"]),
        payload_size=int(row["payload_size"]),
        payload_sha256=row["payload_sha256"],
        truncated=bool(row["truncated"]),
        reason=row["reason"],
        reason_text=row["reason_text"],
        lfn=row["lfn"],
        status=QuarantineStatus(row["status"]),
        replayed_at=(
            replayed_at.replace(tzinfo=UTC) if replayed_at is not None and not replayed_at.tzinfo else replayed_at
        ),
    )
