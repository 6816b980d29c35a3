"""The quarantine table on real Postgres: idempotent inserts, capped payloads, listing and replay to Kafka."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from confluent_kafka import Producer

from rawflow.errors import PermanentError, TransientError
from rawflow.grid.process import free_port
from rawflow.kafka import KafkaSettings, Topics
from rawflow.messages import Reason
from rawflow.quarantine import Quarantine, QuarantineEntry, QuarantineStatus
from tests.fixtures.kafka import read_topic


def entry(offset: int, payload: bytes, reason: Reason = Reason.BAD_JSON, topic: str = "t") -> QuarantineEntry:
    return QuarantineEntry(
        topic=topic, partition=0, offset=offset, key=b"k", payload=payload, reason=reason, text="why"
    )


@pytest.fixture(params=["postgres", "sqlite"])
def quarantine(request: pytest.FixtureRequest, tmp_path: Path) -> Quarantine:
    url = request.getfixturevalue("pg_database") if request.param == "postgres" else f"sqlite:///{tmp_path}/q.db"
    q = Quarantine(url, payload_cap=100)
    q.create_schema()
    q.create_schema()  # idempotent
    return q


def test_rows_are_idempotent_per_message(quarantine: Quarantine) -> None:
    assert quarantine.add([entry(1, b"{bad"), entry(2, b"[1]", Reason.NOT_OBJECT)]) == 2
    # The same batch read again after a crash adds nothing ...
    assert quarantine.add([entry(1, b"{bad"), entry(2, b"[1]", Reason.NOT_OBJECT)]) == 0
    # ... but a broker that restarted empty reuses offsets for other messages: those are new rows.
    assert quarantine.add([entry(1, b"{other")]) == 1
    assert quarantine.count_by_reason() == {"bad_json": 2, "not_object": 1}
    assert [r.offset for r in quarantine.list(reason=Reason.BAD_JSON)] == [1, 1]
    assert quarantine.list(topic="elsewhere") == []


def test_payload_is_capped_with_the_hash_of_the_whole(quarantine: Quarantine) -> None:
    big = bytes(range(256)) * 4
    quarantine.add([entry(7, big, Reason.MESSAGE_TOO_LARGE)])
    [row] = quarantine.list()
    assert row.truncated and row.payload == big[:100] and row.payload_size == len(big)
    assert row.payload_sha256 == hashlib.sha256(big).hexdigest()
    assert row.reason == "message_too_large" and row.reason_text == "why" and row.key == b"k"
    assert row.received_at.tzinfo is not None


def test_replay_publishes_the_original_bytes_and_marks_rows(
    pg_database: str, kafka_settings: KafkaSettings, kafka_topics: Topics, kafka_producer: Producer
) -> None:
    q = Quarantine(pg_database, payload_cap=100)
    q.create_schema()
    q.add([entry(1, b'{"fixed": 1}', topic=kafka_topics.raw_announce), entry(2, b"x" * 500, Reason.MESSAGE_TOO_LARGE)])
    small, big = q.list()
    with pytest.raises(PermanentError, match="truncated"):
        q.replay([big.id], kafka_producer)
    with pytest.raises(PermanentError, match="no quarantined message"):
        q.replay([123456], kafka_producer)
    assert q.replay([small.id], kafka_producer) == 1
    [msg] = read_topic(kafka_settings, kafka_topics.raw_announce, expected=1)
    assert msg.value() == b'{"fixed": 1}' and msg.key() == b"k"  # type: ignore[attr-defined]
    assert [r.id for r in q.list()] == [big.id]
    [replayed] = q.list(status=QuarantineStatus.REPLAYED)
    assert replayed.id == small.id and replayed.replayed_at is not None


def test_database_down_is_transient() -> None:
    q = Quarantine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nowhere")
    with pytest.raises(TransientError):
        q.add([entry(1, b"x")])
