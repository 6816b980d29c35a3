"""BlockActivityTrigger: wait (in the triggerer) until a block has news for a replication round.

It only polls the catalogue: it fires when the block's file count differs from ``known_files``, when the block
is closed, or when ``wake_at`` passes (end of day + grace, or a retransfer backoff). No storage access here:
gfal2 stays on the workers. It gives up after ``max_failed_polls`` catalogue errors in a row, or
``timeout_seconds`` past ``wake_at``, with one ``{"status": "error"}`` event the operator turns into a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

TRIGGER_PATH = "rawflow_airflow.triggers.block_activity.BlockActivityTrigger"


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
        max_failed_polls: int = 30,
        timeout_seconds: float = 600.0,
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
        self.max_failed_polls = max_failed_polls
        self.timeout_seconds = timeout_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            TRIGGER_PATH,
            {
                "catalogue_conn_id": self.catalogue_conn_id,
                "data_type": self.data_type,
                "block_id": self.block_id,
                "known_files": self.known_files,
                "known_open": self.known_open,
                "wake_at": self.wake_at,
                "poll_interval": self.poll_interval,
                "totals": self.totals,
                "max_failed_polls": self.max_failed_polls,
                "timeout_seconds": self.timeout_seconds,
            },
        )

    def _event(self, reason: str, files: int) -> TriggerEvent:
        return TriggerEvent({"status": "success", "reason": reason, "files": files, "totals": self.totals})

    def _error(self, message: str) -> TriggerEvent:
        return TriggerEvent({"status": "error", "message": message, "permanent": False, "totals": self.totals})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from rawflow.catalogue.base import utc_now
        from rawflow.naming import DataType
        from rawflow_airflow.hooks.catalogue import CatalogueHook

        data_type = DataType.parse(self.data_type)
        wake_at = datetime.fromisoformat(self.wake_at)
        give_up_at = wake_at + timedelta(seconds=self.timeout_seconds)
        try:
            catalogue = await sync_to_async(CatalogueHook(self.catalogue_conn_id).get_conn)()
        except Exception as exc:
            yield self._error(f"cannot reach the catalogue: {exc}")
            return
        failed = 0
        try:
            while True:
                try:
                    block = await asyncio.to_thread(catalogue.get_block, data_type, self.block_id)
                except Exception as exc:  # catalogue briefly away: keep waiting, within a bound
                    failed += 1
                    self.log.warning("catalogue poll %d/%d failed: %s", failed, self.max_failed_polls, exc)
                    if failed >= self.max_failed_polls:
                        yield self._error(f"catalogue unreachable for {failed} polls in a row: {exc}")
                        return
                else:
                    failed = 0
                    files, is_open = (block.files, block.is_open) if block is not None else (0, True)
                    if files != self.known_files:
                        yield self._event("new_files", files)
                        return
                    if is_open != self.known_open:
                        yield self._event("block_closed", files)
                        return
                    if utc_now() >= wake_at:
                        yield self._event("timer", files)
                        return
                if utc_now() >= give_up_at:
                    yield self._error(f"no answer from the catalogue by {give_up_at.isoformat()}")
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            catalogue.close()
