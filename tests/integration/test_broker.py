"""The local Tansu broker: start on a free port, topics, large messages, restart on the same port, stop by PID."""

from __future__ import annotations

import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from rawflow.grid.broker import Broker, restart_broker, start_broker, stop_broker
from rawflow.grid.process import pid_alive, port_open
from rawflow.kafka import KafkaSettings, Topics, admin_config, consumer_config, ensure_topics, producer_config
from tests.fixtures.kafka import make_kafka_settings, read_topic


def test_session_broker_has_the_project_topics(kafka_broker: Broker) -> None:
    metadata = AdminClient({"bootstrap.servers": kafka_broker.bootstrap}).list_topics(timeout=10)
    for topic in Topics().all:
        assert topic in metadata.topics
        assert len(metadata.topics[topic].partitions) == 3


def test_ensure_topics_is_idempotent(kafka_settings: KafkaSettings) -> None:
    topics = Topics().with_prefix(f"idem{uuid.uuid4().hex[:6]}.")
    assert sorted(ensure_topics(kafka_settings, topics)) == sorted(topics.all)
    assert ensure_topics(kafka_settings, topics) == []


def test_a_5mb_message_travels_with_our_client_settings(kafka_settings: KafkaSettings, kafka_topics: Topics) -> None:
    producer = Producer(producer_config(kafka_settings))
    big = b"x" * (5 * 1024 * 1024)
    producer.produce(kafka_topics.raw_announce, value=big, key=b"big")
    producer.produce(kafka_topics.raw_announce, value=b"small", key=b"small")
    assert producer.flush(30) == 0
    got = read_topic(kafka_settings, kafka_topics.raw_announce, expected=2)
    sizes = sorted(len(m.value()) for m in got)  # type: ignore[attr-defined]
    assert sizes == [5, len(big)]


def test_consumer_config_commits_only_by_hand(kafka_settings: KafkaSettings) -> None:
    config = consumer_config(kafka_settings)
    assert config["enable.auto.commit"] is False
    assert config["fetch.max.bytes"] >= 5 * 1024 * 1024
    assert config["receive.message.max.bytes"] > config["fetch.max.bytes"]
    assert admin_config(kafka_settings)["bootstrap.servers"] == kafka_settings.bootstrap


def test_restart_on_the_same_port_and_stop(tmp_path: Path) -> None:
    broker = start_broker(tmp_path)
    try:
        settings = make_kafka_settings(broker.bootstrap)
        producer = Producer(producer_config(settings))
        producer.produce(Topics().status, value=b"before")
        assert producer.flush(10) == 0
        old_pid = broker.daemon.pid
        broker = restart_broker(broker)
        assert broker.daemon.pid != old_pid and not pid_alive(old_pid)
        # The in-memory log is gone but the topics are back, and the same producer reconnects by itself.
        producer.produce(Topics().status, value=b"after")
        assert producer.flush(30) == 0
        # "before" would come first (offset 0) had the log survived.
        values = [m.value() for m in read_topic(settings, Topics().status, expected=1)]  # type: ignore[attr-defined]
        assert values == [b"after"]
    finally:
        assert stop_broker(broker)
    assert not pid_alive(broker.daemon.pid)
    assert not port_open(broker.port)
