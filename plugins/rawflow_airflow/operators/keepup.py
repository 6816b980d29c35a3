"""KeepupOperator: one keep-up stage (RAW→RTRAW, RTRAW→ESD or DQM) over some blocks, deferred while jobs run.

On the worker: plan and submit (:func:`rawflow.processing.keepup.submit_round`) and act on what already
finished (:func:`~rawflow.processing.keepup.collect_round`), then defer on :class:`ComputeJobsTrigger` (no
worker slot held; the triggerer only polls job states). Woken, the worker collects, checks the outputs,
registers them with lineage, releases/resubmits/retries, and defers again until nothing is queued or running.
Files that end Problematic fail the task with their reasons once every other file is done, without task
retries: the retry policy already retried their jobs, and a task retry would only hold the next stage back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from rawflow_airflow.triggers.compute_jobs import ComputeJobsTrigger

MAX_STAGES = 8  # a campaign has at most 8 steps (the steering schema's bound)


class KeepupProblematic(AirflowFailException):
    """Some files could not be processed within the retry limit (the reasons are in the jobs table); no task
    retry can help: `rawflow jobs retry` starts them again."""


class KeepupOperator(BaseOperator):
    template_fields: Sequence[str] = ("block_ids", "stages", "batch_size", "max_failures", "retry_backoff_seconds")
    ui_color = "#e8dcf5"

    def __init__(
        self,
        *,
        block_ids: list[str] | str,
        stages: list[str] | str,
        catalogue_conn_id: str = "rawflow_catalogue",
        storage_conn_id: str = "rawflow_storage",
        compute_conn_id: str = "rawflow_compute",
        sites_path: str | None = None,
        batch_size: int | str = "{{ var.value.get('rawflow_keepup_batch_size', 200) }}",
        max_failures: int | str = "{{ var.value.get('rawflow_keepup_max_failures', 3) }}",
        retry_backoff_seconds: float | str = "{{ var.value.get('rawflow_keepup_backoff_seconds', 120) }}",
        poll_interval: float = 10.0,
        max_wait: timedelta = timedelta(hours=12),
        max_retry_sleep: timedelta = timedelta(hours=1),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.block_ids = block_ids
        self.stages = stages
        self.catalogue_conn_id = catalogue_conn_id
        self.storage_conn_id = storage_conn_id
        self.compute_conn_id = compute_conn_id
        self.sites_path = sites_path
        self.batch_size = batch_size
        self.max_failures = max_failures
        self.retry_backoff_seconds = retry_backoff_seconds
        self.poll_interval = poll_interval
        self.max_wait = max_wait
        self.max_retry_sleep = max_retry_sleep

    # -- helpers ------------------------------------------------------------------------------------------

    @staticmethod
    def _list(value: list[str] | str) -> list[str]:
        if isinstance(value, str):
            return [v for v in value.replace(",", " ").split() if v]
        return [str(v) for v in value]

    def _context(self) -> Any:
        from rawflow.processing.jobs import JobStore
        from rawflow.processing.keepup import KeepupContext
        from rawflow.processing.planning import RetryPolicy
        from rawflow.sites import load_sites
        from rawflow_airflow.hooks.catalogue import CatalogueHook
        from rawflow_airflow.hooks.compute import ComputeHook
        from rawflow_airflow.hooks.storage import StorageHook
        from rawflow_airflow.settings import sites_path

        catalogue_hook = CatalogueHook(self.catalogue_conn_id)
        return KeepupContext(
            catalogue=catalogue_hook.get_conn(),
            backend=ComputeHook(self.compute_conn_id).get_conn(),
            storage=StorageHook(self.storage_conn_id).get_conn(),
            sites=load_sites(self.sites_path or sites_path()),
            jobs=JobStore(catalogue_hook.quarantine_url()),
            batch_size=int(self.batch_size),
            policy=RetryPolicy(
                max_failures=int(self.max_failures),
                max_attempts=max(6, int(self.max_failures) * 2),
                backoff=timedelta(seconds=float(self.retry_backoff_seconds)),
            ),
            stages=tuple(self._list(self.stages)),
        )

    @staticmethod
    def _close(ctx: Any) -> None:
        for part in (ctx.catalogue, ctx.backend, ctx.jobs):
            try:
                part.close()
            except Exception:  # closing is best effort
                pass

    # -- entry points -------------------------------------------------------------------------------------

    def execute(self, context: Any) -> dict[str, Any]:
        return self._round(context, first=True, event=None)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = event or {}
        self.log.info("woken: %s (%r)", event.get("status"), event.get("message"))
        return self._round(context, first=False, event=event)

    def _round(self, context: Any, *, first: bool, event: dict[str, Any] | None) -> dict[str, Any]:
        from rawflow.processing.keepup import RoundReport, collect_round, submit_round

        ctx = self._context()
        try:
            reports: dict[str, RoundReport] = {}
            for block_id in self._list(self.block_ids):
                report = RoundReport(block_id=block_id)
                if not first:
                    report.add(collect_round(ctx, block_id))
                report.add(submit_round(ctx, block_id))
                collected = collect_round(ctx, block_id)
                report.add(collected)
                # What this round registered may let the next stage (a campaign's next step) start now rather
                # than at the next DAG run: plan again while that submits something and nothing is active.
                for _ in range(MAX_STAGES):
                    if collected.active or not collected.registered:
                        break
                    again = submit_round(ctx, block_id)
                    report.add(again)
                    if not again.total_submitted:
                        break
                    collected = collect_round(ctx, block_id)
                    report.add(collected)
                reports[block_id] = report
                self.log.info("keep-up %s %s: %s", block_id, ",".join(ctx.stages), report.to_dict())
            keys = sorted(r.backend_key for b in reports for r in ctx.active_jobs(b))
            retry_times = [r.next_retry_at for r in reports.values() if r.next_retry_at is not None]
            if not keys and not retry_times:
                self._finish(ctx, list(reports))
        finally:
            self._close(ctx)
        started = (event or {}).get("started") or datetime.now(UTC).isoformat()
        if keys:
            self.defer(
                trigger=ComputeJobsTrigger(
                    keys=keys,
                    compute_conn_id=self.compute_conn_id,
                    poll_interval=self.poll_interval,
                    timeout_seconds=self.max_wait.total_seconds(),
                ),
                method_name="execute_complete",
                timeout=self.max_wait + timedelta(minutes=10),
            )
        if retry_times:
            wake = min(retry_times)
            if wake - datetime.now(UTC) <= self.max_retry_sleep:
                self.defer(
                    trigger=ComputeJobsTrigger(keys=[], wake_at=wake.isoformat(), timeout_seconds=3600 * 2),
                    method_name="execute_complete",
                    timeout=self.max_retry_sleep + timedelta(minutes=10),
                )
        summary = {b: r.to_dict() for b, r in reports.items()}
        problematic = self._problematic()
        # Only files that became Problematic during this DAG run fail it: the run that saw them end so already
        # failed, and every later catch-up run over the same days would otherwise be red until `rawflow jobs retry`.
        run = context.get("dag_run")
        since = _aware(run.start_date) if run is not None and run.start_date is not None else None
        new = [(key, reason) for key, reason, at in problematic if since is None or _aware(at) >= since]
        if len(new) < len(problematic):
            self.log.warning(
                "%d job(s) Problematic since earlier runs (`rawflow jobs list`, `rawflow jobs retry`)",
                len(problematic) - len(new),
            )
        if new:
            # The reasons carry text from the jobs' output (untrusted): quoted, one line each.
            shown = "; ".join(f"{key}: {reason!r}" for key, reason in new[:5])
            raise KeepupProblematic(f"{len(new)} job(s) Problematic (`rawflow jobs list`): {shown}")
        self.log.info("keep-up done since %s: %s", started, summary)
        return summary

    def _finish(self, ctx: Any, block_ids: list[str]) -> None:
        """Called once the blocks have no job left to wait for (campaigns replicate their outputs here)."""

    def _problematic(self) -> list[tuple[str, str, datetime]]:
        from rawflow.processing.jobs import JobStore
        from rawflow.processing.planning import JobPhase
        from rawflow_airflow.hooks.catalogue import CatalogueHook

        store = JobStore(CatalogueHook(self.catalogue_conn_id).quarantine_url())
        try:
            payloads = set(self._list(self.stages))
            return [
                (r.key, r.reason or "", r.updated_at)
                for b in self._list(self.block_ids)
                for r in store.list_jobs(block_id=b, states=[JobPhase.PROBLEMATIC])
                if r.payload in payloads
            ]
        finally:
            store.close()


def _aware(moment: datetime) -> datetime:
    """SQLite gives naive timestamps (stored as UTC), Postgres aware ones."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
