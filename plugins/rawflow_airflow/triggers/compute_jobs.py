"""ComputeJobsTrigger: wait (in the triggerer) until no keep-up job of a round is queued or running.

It only polls job states through the compute backend's ``poll`` (in a thread: the bindings block); it submits,
releases and collects nothing: the worker does that afterwards. It gives up after ``timeout_seconds`` or after
``max_failed_polls`` polls in a row fail, and yields exactly one :class:`ComputeJobsEvent` payload.
With no keys it just sleeps until ``wake_at`` (a retry's backoff) and wakes the task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from airflow.triggers.base import BaseTrigger, TriggerEvent

WAITING_STATES = ("queued", "running")


class ComputeJobsEvent(TypedDict):
    status: Literal["finished", "timeout", "poll_failed", "wake"]
    states: dict[str, str]  # key → last polled JobState value
    message: str


class ComputeJobsTrigger(BaseTrigger):
    def __init__(
        self,
        *,
        keys: list[str],
        compute_conn_id: str = "rawflow_compute",
        poll_interval: float = 10.0,
        timeout_seconds: float = 6 * 3600.0,
        max_failed_polls: int = 30,
        wake_at: str | None = None,
    ) -> None:
        super().__init__()
        self.keys = list(keys)
        self.compute_conn_id = compute_conn_id
        self.poll_interval = float(poll_interval)
        self.timeout_seconds = float(timeout_seconds)
        self.max_failed_polls = int(max_failed_polls)
        self.wake_at = wake_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "rawflow_airflow.triggers.compute_jobs.ComputeJobsTrigger",
            {
                "keys": self.keys,
                "compute_conn_id": self.compute_conn_id,
                "poll_interval": self.poll_interval,
                "timeout_seconds": self.timeout_seconds,
                "max_failed_polls": self.max_failed_polls,
                "wake_at": self.wake_at,
            },
        )

    @staticmethod
    def event(status: str, states: dict[str, str], message: str) -> TriggerEvent:
        payload: ComputeJobsEvent = {"status": status, "states": states, "message": message}  # type: ignore[typeddict-item]
        return TriggerEvent(dict(payload))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        if not self.keys:
            wake = datetime.fromisoformat(self.wake_at) if self.wake_at else datetime.now(UTC)
            delay = min(max((wake - datetime.now(UTC)).total_seconds(), 0.0), self.timeout_seconds)
            await asyncio.sleep(delay)
            yield self.event("wake", {}, f"slept {delay:.0f}s for a retry's backoff")
            return

        from asgiref.sync import sync_to_async

        from rawflow_airflow.hooks.compute import ComputeHook

        deadline = time.monotonic() + self.timeout_seconds
        failed = 0
        states: dict[str, str] = {}
        backend = None
        while True:
            try:
                if backend is None:
                    backend = await sync_to_async(ComputeHook(self.compute_conn_id).get_conn)()
                statuses = await asyncio.to_thread(backend.poll, self.keys)
            except Exception as exc:  # the schedule briefly away: keep polling, the jobs go on without us
                failed += 1
                self.log.warning("poll %d/%d failed: %s", failed, self.max_failed_polls, exc)
                if failed >= self.max_failed_polls:
                    yield self.event("poll_failed", states, f"{failed} polls in a row failed, last: {exc}")
                    return
            else:
                failed = 0
                states = {key: statuses[key].state.value if key in statuses else "missing" for key in self.keys}
                if not any(state in WAITING_STATES for state in states.values()):
                    yield self.event("finished", states, f"{len(states)} job(s) no longer queued or running")
                    return
            if time.monotonic() >= deadline:
                yield self.event("timeout", states, f"jobs still running after {self.timeout_seconds:.0f}s")
                return
            await asyncio.sleep(self.poll_interval)
