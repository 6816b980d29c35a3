"""KafkaBacklogTrigger: wait (in the triggerer) until the announcement topics hold unconsumed messages.

It only polls: the consumer group's committed offsets against the partitions' high watermarks. It consumes
nothing and commits nothing, so offsets stay under the control of the worker that registers the files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


def consumer_backlog(config: dict[str, Any], topics: list[str], timeout: float = 5.0) -> int:
    """Messages in ``topics`` past the group's committed offsets (blocking; run it in a thread)."""
    from confluent_kafka import OFFSET_INVALID, Consumer, TopicPartition

    consumer = Consumer({**config, "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=timeout)
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            if topic in metadata.topics
            for p in metadata.topics[topic].partitions
        ]
        if not partitions:
            return 0
        committed = consumer.committed(partitions, timeout=timeout)
        backlog = 0
        for tp in committed:
            low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)
            start = tp.offset if tp.offset != OFFSET_INVALID and tp.offset >= 0 else low
            backlog += max(0, high - start)
        return backlog
    finally:
        consumer.close()


class KafkaBacklogTrigger(BaseTrigger):
    def __init__(self, *, kafka_conn_id: str, topics: list[str], poll_interval: float = 0.5) -> None:
        super().__init__()
        self.kafka_conn_id = kafka_conn_id
        self.topics = list(topics)
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "rawflow_airflow.triggers.kafka_backlog.KafkaBacklogTrigger",
            {"kafka_conn_id": self.kafka_conn_id, "topics": self.topics, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from rawflow.kafka import consumer_config
        from rawflow_airflow.hooks.kafka import RawflowKafkaHook

        settings = await sync_to_async(RawflowKafkaHook(self.kafka_conn_id).settings)()
        config = consumer_config(settings)
        while True:
            try:
                backlog = await asyncio.to_thread(consumer_backlog, config, self.topics)
            except Exception as exc:  # broker away: keep waiting, librdkafka-style
                self.log.warning("Kafka backlog check failed (%s); retrying", exc)
                backlog = 0
            if backlog > 0:
                yield TriggerEvent({"backlog": backlog})
                return
            await asyncio.sleep(self.poll_interval)
