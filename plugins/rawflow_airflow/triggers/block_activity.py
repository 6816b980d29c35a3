"""BlockActivityTrigger: wait (in the triggerer) until a block has news for a replication round.

It only polls the catalogue: it fires when the block's file count differs from ``known_files``, when the block
is closed, or when ``wake_at`` passes (end of day + grace, or a retransfer backoff). No storage access here:
gfal2 stays on the workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class BlockActivityTrigger(BaseTrigger):
    def __init__(
        self,
        *,
        catalogue_conn_id: str,
        data_type: str,
        block_id: str,
        known_files: int,
        known_open: bool,
        wake_at: str,
        poll_interval: float = 2.0,
        totals: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.catalogue_conn_id = catalogue_conn_id
        self.data_type = data_type
        self.block_id = block_id
        self.known_files = known_files
        self.known_open = known_open
        self.wake_at = wake_at
        self.poll_interval = poll_interval
        # The task's running totals, handed back with the event (the task keeps no state between rounds).
        self.totals = dict(totals or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "rawflow_airflow.triggers.block_activity.BlockActivityTrigger",
            {
                "catalogue_conn_id": self.catalogue_conn_id,
                "data_type": self.data_type,
                "block_id": self.block_id,
                "known_files": self.known_files,
                "known_open": self.known_open,
                "wake_at": self.wake_at,
                "poll_interval": self.poll_interval,
                "totals": self.totals,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from rawflow.catalogue.base import utc_now
        from rawflow.naming import DataType
        from rawflow_airflow.hooks.catalogue import CatalogueHook

        catalogue = await sync_to_async(CatalogueHook(self.catalogue_conn_id).get_conn)()
        data_type = DataType.parse(self.data_type)
        wake_at = datetime.fromisoformat(self.wake_at)
        try:
            while True:
                try:
                    block = await asyncio.to_thread(catalogue.get_block, data_type, self.block_id)
                except Exception as exc:  # catalogue briefly away: keep waiting
                    self.log.warning("catalogue poll failed (%s); retrying", exc)
                    block = None
                    files, is_open = self.known_files, self.known_open
                else:
                    files, is_open = (block.files, block.is_open) if block is not None else (0, True)
                if files != self.known_files:
                    yield TriggerEvent({"reason": "new_files", "files": files, "totals": self.totals})
                    return
                if is_open != self.known_open:
                    yield TriggerEvent({"reason": "block_closed", "files": files, "totals": self.totals})
                    return
                if utc_now() >= wake_at:
                    yield TriggerEvent({"reason": "timer", "files": files, "totals": self.totals})
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            catalogue.close()
