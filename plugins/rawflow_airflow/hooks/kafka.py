"""RawflowKafkaHook: turns the ``rawflow_kafka`` Connection (librdkafka settings in its extra) into clients."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer

    from rawflow.kafka import KafkaSettings

_KNOWN = {"bootstrap.servers", "group.id", "session.timeout.ms"}


class RawflowKafkaHook(BaseHook):
    conn_name_attr = "kafka_conn_id"
    default_conn_name = "rawflow_kafka"
    conn_type = "kafka"
    hook_name = "Rawflow Kafka"

    def __init__(self, kafka_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kafka_conn_id = kafka_conn_id

    def settings(self) -> KafkaSettings:
        from rawflow.kafka import KafkaSettings

        extra = dict(self.get_connection(self.kafka_conn_id).extra_dejson)
        bootstrap = extra.get("bootstrap.servers")
        if not bootstrap:
            raise ValueError(f"connection {self.kafka_conn_id}: extra 'bootstrap.servers' is required")
        # Offsets are always committed by hand after the catalogue: the connection cannot turn that off.
        for key in ("enable.auto.commit", "auto.offset.reset"):
            extra.pop(key, None)
        return KafkaSettings(
            bootstrap=str(bootstrap),
            group_id=str(extra.get("group.id", "rawflow-datareceiver")),
            session_timeout_ms=int(extra.get("session.timeout.ms", 45000)),
            extra={k: v for k, v in extra.items() if k not in _KNOWN},
        )

    def consumer(self, topics: list[str]) -> Consumer:
        """A consumer *assigned* every partition of ``topics`` at the group's committed offsets.

        Assignment instead of subscription: a task drains alone (the DAG allows one active run), and joining a
        consumer group costs seconds per task start; offsets are still committed to the group.
        """
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from rawflow.kafka import consumer_config

        consumer = Consumer(consumer_config(self.settings()))
        try:
            metadata = consumer.list_topics(timeout=10)
            partitions = [
                TopicPartition(t, p) for t in topics if t in metadata.topics for p in metadata.topics[t].partitions
            ]
            committed = consumer.committed(partitions, timeout=10) if partitions else []
            consumer.assign(
                [
                    TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                    for tp in committed
                ]
            )
        except Exception:
            consumer.close()
            raise
        return consumer

    def producer(self) -> Producer:
        from rawflow.receiver import make_producer

        return make_producer(self.settings())

    def get_conn(self) -> KafkaSettings:
        return self.settings()
