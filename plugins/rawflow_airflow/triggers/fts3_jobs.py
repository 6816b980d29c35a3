"""Fts3JobsTrigger: wait (in the triggerer) until every FTS3 job of a replication round is over.

It only polls the FTS3 REST API (job states), with the token from the ``rawflow_fts3`` connection; it copies
nothing and touches no storage. The worker collects the results and validates the replicas afterwards.
It gives up with one ``{"status": "error"}`` event after ``max_failed_polls`` failed polls in a row, at once
for a permanent error (token refused, unknown job), or when the jobs outlast ``timeout_seconds``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

TRIGGER_PATH = "rawflow_airflow.triggers.fts3_jobs.Fts3JobsTrigger"


class Fts3JobsTrigger(BaseTrigger):
    def __init__(
        self,
        *,
        job_ids: list[str],
        fts3_conn_id: str = "rawflow_fts3",
        poll_interval: float = 5.0,
        totals: dict[str, Any] | None = None,
        max_failed_polls: int = 20,
        timeout_seconds: float = 6 * 3600.0,
    ) -> None:
        super().__init__()
        self.job_ids = list(job_ids)
        self.fts3_conn_id = fts3_conn_id
        self.poll_interval = poll_interval
        self.totals = dict(totals or {})
        self.max_failed_polls = max_failed_polls
        self.timeout_seconds = timeout_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            TRIGGER_PATH,
            {
                "job_ids": self.job_ids,
                "fts3_conn_id": self.fts3_conn_id,
                "poll_interval": self.poll_interval,
                "totals": self.totals,
                "max_failed_polls": self.max_failed_polls,
                "timeout_seconds": self.timeout_seconds,
            },
        )

    def _error(self, message: str, *, permanent: bool) -> TriggerEvent:
        return TriggerEvent(
            {"status": "error", "message": message, "permanent": permanent, "jobs": {}, "totals": self.totals}
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from rawflow.errors import PermanentError
        from rawflow_airflow.hooks.transfer import TransfertoolHook

        try:
            tool = await sync_to_async(TransfertoolHook("fts3", fts3_conn_id=self.fts3_conn_id).get_conn)()
        except Exception as exc:
            yield self._error(f"cannot build the FTS3 client: {exc}", permanent=True)
            return
        deadline = time.monotonic() + self.timeout_seconds
        failed = 0
        while True:
            try:
                statuses = await asyncio.to_thread(tool.poll, self.job_ids)
            except PermanentError as exc:
                yield self._error(f"FTS3 refused the poll: {exc}", permanent=True)
                return
            except Exception as exc:  # FTS briefly away: keep polling within a bound, the jobs go on without us
                failed += 1
                self.log.warning("FTS3 poll %d/%d failed: %s", failed, self.max_failed_polls, exc)
                if failed >= self.max_failed_polls:
                    yield self._error(f"FTS3 unreachable for {failed} polls in a row: {exc}", permanent=False)
                    return
            else:
                failed = 0
                states = {job_id: statuses[job_id].state.value for job_id in self.job_ids if job_id in statuses}
                if len(states) == len(self.job_ids) and all(statuses[j].terminal for j in self.job_ids):
                    yield TriggerEvent({"status": "success", "jobs": states, "totals": self.totals})
                    return
            if time.monotonic() >= deadline:
                yield self._error(
                    f"FTS3 jobs {self.job_ids[:5]} still running after {self.timeout_seconds:.0f} s", permanent=False
                )
                return
            await asyncio.sleep(self.poll_interval)
