"""DrainAnnouncementsOperator: the DataReceiver as an Airflow task.

Waits (deferred, no worker slot) for announcements, then drains them on the worker: checks, one catalogue
registration per batch, quarantine + dead letters, offsets committed after the catalogue commit. Each block
that got files is emitted as an Asset event, so downstream work is data-driven.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import Asset, AssetAlias, BaseOperator

BLOCK_ALIAS = "rawflow-block-registrations"


def block_asset(block: str) -> Asset:
    """The Asset updated whenever files of a block (e.g. ``RAW-20251101``) are registered."""
    return Asset(name=f"rawflow-block-{block}", uri=f"rawflow://blocks/{block}", group="rawflow-blocks")


class DrainAnnouncementsOperator(BaseOperator):
    template_fields: Sequence[str] = ("data_types", "max_messages", "max_seconds")

    def __init__(
        self,
        *,
        data_types: Sequence[str] = ("RAW", "RTRAW"),
        kafka_conn_id: str = "rawflow_kafka",
        catalogue_conn_id: str = "rawflow_catalogue",
        storage_conn_id: str = "rawflow_storage",
        smtp_conn_id: str = "smtp_default",
        alert_to: Sequence[str] = ("shifters@localhost",),
        sites_path: str | None = None,
        max_messages: int = 200_000,
        max_seconds: float = 60.0,
        idle_seconds: float = 2.0,
        deferrable: bool = True,
        poll_interval: float = 0.5,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("outlets", [AssetAlias(BLOCK_ALIAS)])
        super().__init__(**kwargs)
        self.data_types = list(data_types)
        self.kafka_conn_id = kafka_conn_id
        self.catalogue_conn_id = catalogue_conn_id
        self.storage_conn_id = storage_conn_id
        self.smtp_conn_id = smtp_conn_id
        self.alert_to = list(alert_to)
        self.sites_path = sites_path
        self.max_messages = max_messages
        self.max_seconds = max_seconds
        self.idle_seconds = idle_seconds
        self.deferrable = deferrable
        self.poll_interval = poll_interval

    def _topics(self) -> list[str]:
        from rawflow.kafka import Topics
        from rawflow.naming import DataType

        return [Topics().announce_for(DataType.parse(t)) for t in self.data_types]

    def execute(self, context: Any) -> dict[str, Any]:
        if self.deferrable:
            from rawflow_airflow.triggers.kafka_backlog import KafkaBacklogTrigger

            self.defer(
                trigger=KafkaBacklogTrigger(
                    kafka_conn_id=self.kafka_conn_id, topics=self._topics(), poll_interval=self.poll_interval
                ),
                method_name="execute_complete",
            )
        return self._drain(context)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        self.log.info("announcements waiting: %s", (event or {}).get("backlog"))
        return self._drain(context)

    def _drain(self, context: Any) -> dict[str, Any]:
        from rawflow.quarantine import Quarantine
        from rawflow.receiver import Receiver
        from rawflow.sites import load_sites
        from rawflow_airflow.hooks.catalogue import CatalogueHook
        from rawflow_airflow.hooks.kafka import RawflowKafkaHook
        from rawflow_airflow.hooks.notify import SmtpNotifierHook
        from rawflow_airflow.hooks.storage import StorageHook
        from rawflow_airflow.settings import sites_path

        kafka = RawflowKafkaHook(self.kafka_conn_id)
        catalogue_hook = CatalogueHook(self.catalogue_conn_id)
        quarantine = Quarantine(catalogue_hook.quarantine_url())
        quarantine.create_schema()
        consumer = kafka.consumer(self._topics())
        producer = kafka.producer()
        receiver = Receiver(
            consumer,
            catalogue_hook.get_conn(),
            StorageHook(self.storage_conn_id).get_conn(),
            load_sites(self.sites_path or sites_path()),
            quarantine,
            producer,
            SmtpNotifierHook(self.smtp_conn_id, to=self.alert_to).get_conn(),
        )
        totals: dict[str, Any] = {"messages": 0, "accepted": 0, "duplicates": 0, "rejected": {}, "blocks": []}
        blocks: set[str] = set()
        deadline = time.monotonic() + float(self.max_seconds)
        try:
            # Keep draining while announcements flow (amortises the task start); stop when idle.
            while totals["messages"] < int(self.max_messages) and time.monotonic() < deadline:
                report = receiver.drain(int(self.max_messages) - totals["messages"], timeout=float(self.idle_seconds))
                if not report.messages:
                    break
                self.log.info("%s", report.summary())
                totals["messages"] += report.messages
                totals["accepted"] += report.accepted
                totals["duplicates"] += report.duplicates
                for reason, count in report.rejected_by_reason.items():
                    totals["rejected"][reason] = totals["rejected"].get(reason, 0) + count
                blocks |= report.blocks_seen
        finally:
            producer.flush(10)
            consumer.close()
            receiver.close()
        totals["blocks"] = sorted(blocks)
        outlet = context["outlet_events"][AssetAlias(BLOCK_ALIAS)]
        for block in totals["blocks"]:
            outlet.add(block_asset(block), extra={"source": "receiver"})
        return totals
