"""Fts3JobsTrigger: wait (in the triggerer) until every FTS3 job of a replication round is over.

It only polls the FTS3 REST API (job states), with the token from the ``rawflow_fts3`` connection; it copies
nothing and touches no storage. The worker collects the results and validates the replicas afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class Fts3JobsTrigger(BaseTrigger):
    def __init__(
        self,
        *,
        job_ids: list[str],
        fts3_conn_id: str = "rawflow_fts3",
        poll_interval: float = 5.0,
        totals: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.job_ids = list(job_ids)
        self.fts3_conn_id = fts3_conn_id
        self.poll_interval = poll_interval
        self.totals = dict(totals or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "rawflow_airflow.triggers.fts3_jobs.Fts3JobsTrigger",
            {
                "job_ids": self.job_ids,
                "fts3_conn_id": self.fts3_conn_id,
                "poll_interval": self.poll_interval,
                "totals": self.totals,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from rawflow_airflow.hooks.transfer import TransfertoolHook

        tool = await sync_to_async(TransfertoolHook("fts3", fts3_conn_id=self.fts3_conn_id).get_conn)()
        while True:
            try:
                statuses = await asyncio.to_thread(tool.poll, self.job_ids)
            except Exception as exc:  # FTS briefly away: keep polling, the jobs go on without us
                self.log.warning("FTS3 poll failed (%s); retrying", exc)
            else:
                states = {job_id: statuses[job_id].state.value for job_id in self.job_ids if job_id in statuses}
                if len(states) == len(self.job_ids) and all(statuses[j].terminal for j in self.job_ids):
                    yield TriggerEvent({"jobs": states, "totals": self.totals})
                    return
            await asyncio.sleep(self.poll_interval)
