"""Kafka topic names, confluent-kafka client configurations and topic creation.

Announcements may be large by mistake (a 5 MB message must be *received* to be rejected cleanly), so
the broker-facing size limits are set well above the receiver's own message cap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from rawflow.errors import TransientError
from rawflow.naming import DataType

log = logging.getLogger(__name__)

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic the DataReceiver reads or writes, configurable in one place."""

    raw_announce: str = "rawflow.raw.announce"
    rtraw_announce: str = "rawflow.rtraw.announce"
    status: str = "rawflow.status"
    deadletter: str = "rawflow.deadletter"

    def announce_for(self, data_type: DataType) -> str:
        return self.raw_announce if data_type is DataType.RAW else self.rtraw_announce

    def type_of(self, topic: str) -> DataType | None:
        """The data type a topic carries, or None for a topic that is not an announcement topic."""
        return {self.raw_announce: DataType.RAW, self.rtraw_announce: DataType.RTRAW}.get(topic)

    @property
    def announce(self) -> tuple[str, str]:
        return (self.raw_announce, self.rtraw_announce)

    @property
    def all(self) -> tuple[str, ...]:
        return (self.raw_announce, self.rtraw_announce, self.status, self.deadletter)

    def with_prefix(self, prefix: str) -> Topics:
        """The same topics under a prefix (tests sharing one broker; several experiments on one cluster)."""
        return Topics(*(f"{prefix}{name}" for name in self.all))


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap: str
    group_id: str = "rawflow-datareceiver"
    # librdkafka's limits must admit an oversized announcement so it can be received and quarantined.
    max_message_bytes: int = 16 * MiB
    session_timeout_ms: int = 45000
    partitions: int = 3
    client_id: str = "rawflow"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def with_group(self, group_id: str) -> KafkaSettings:
        return replace(self, group_id=group_id)


def consumer_config(settings: KafkaSettings) -> dict[str, Any]:
    """At-least-once consumer: offsets are committed by hand, only after the catalogue commit."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap,
        "group.id": settings.group_id,
        "client.id": f"{settings.client_id}-consumer",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 6),
        "max.poll.interval.ms": max(300000, settings.session_timeout_ms),
        "fetch.max.bytes": settings.max_message_bytes,
        "max.partition.fetch.bytes": settings.max_message_bytes,
        "receive.message.max.bytes": settings.max_message_bytes + MiB,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 2000,
        "enable.partition.eof": False,
    }
    config.update(settings.extra)
    return config


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    """Idempotent-enough producer: acks from the leader, retried on broker restarts."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap,
        "client.id": f"{settings.client_id}-producer",
        "acks": "all",
        "message.max.bytes": settings.max_message_bytes,
        "linger.ms": 5,
        "message.timeout.ms": 60000,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 2000,
    }
    config.update(settings.extra)
    return config


def admin_config(settings: KafkaSettings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.bootstrap, "client.id": f"{settings.client_id}-admin"}


def ensure_topics(settings: KafkaSettings, topics: Topics, *, timeout: float = 30.0) -> list[str]:
    """Create the project's topics if missing; returns the ones created. Raises TransientError on timeout."""
    admin = AdminClient(admin_config(settings))
    deadline = time.monotonic() + timeout
    while True:
        try:
            existing = set(admin.list_topics(timeout=5).topics)
            break
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise TransientError(f"Kafka broker {settings.bootstrap} not reachable: {exc}") from exc
            time.sleep(0.2)
    missing = [t for t in topics.all if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=settings.partitions, replication_factor=1) for t in missing],
        request_timeout=timeout,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(topic)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise TransientError(f"creating topic {topic} on {settings.bootstrap}: {exc}") from exc
    log.info("created Kafka topics %s on %s", created, settings.bootstrap)
    return created


class DeliveryTracker:
    """Counts failed deliveries of one producer between checkpoints (librdkafka reports them in flush/poll)."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def __call__(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self.failed.append(str(err))

    def flush(self, producer: Producer, timeout: float) -> None:
        """Wait for every queued message; TransientError if any is still queued or failed."""
        remaining = producer.flush(timeout)
        failed, self.failed = self.failed, []
        if remaining:
            raise TransientError(f"{remaining} Kafka message(s) not delivered within {timeout:.0f} s")
        if failed:
            raise TransientError(f"{len(failed)} Kafka message(s) failed: {failed[0]}")
