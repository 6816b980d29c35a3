"""Operators of the daily block DAG: replicate one block to one site, round after round, until it is done.

The round itself is :func:`rawflow.replication.run_site_round` (the domain decides); this operator only builds
the clients from its hooks, calls it, and defers or finishes as the round says.

``ReplicateBlockSiteOperator`` is mapped over the block's target sites (the disk destinations and the tape
archive), so one site's failure never blocks another. Each round runs on a worker: plan the site's missing
files (shares, routes, retry limits) → copy them in chunked transfer jobs → validate every copied replica by
size and adler32 (→ VALIDATED or BAD) → for the tape site, poll the archive state. Between rounds the task
defers on :class:`BlockActivityTrigger` (no worker slot held) until new files are registered, the block
closes, or a timer fires (retransfer backoff, archive polling, end of day + grace).

Done when the block is closed and every file the site should hold is Processed or Problematic. A site with
Problematic files fails its task with the reasons; the other sites are unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from rawflow_airflow.triggers.block_activity import BlockActivityTrigger
from rawflow_airflow.triggers.fts3_jobs import Fts3JobsTrigger

FTS_SUBMITTED = "fts3_submitted"


class BlockSiteProblematic(AirflowFailException):
    """Some files could not be brought to the site within the retry limit (no task retry can help)."""


class ReplicateBlockSiteOperator(BaseOperator):
    template_fields: Sequence[str] = (
        "site",
        "data_type",
        "block_id",
        "close_at",
        "transfer_backend",
        "retransfer_backoff_seconds",
        "max_attempts",
        "close_max_wait_hours",
        "close_recheck_seconds",
    )
    ui_color = "#d8ecf7"

    def __init__(
        self,
        *,
        site: str,
        data_type: str,
        # The receiving day in the timetable's zone (BlockDayTimetable): the run's logical date, or its trigger
        # time for a manual run without one; it closes at the end of that day + 2 h grace.
        block_id: str = "{{ dag.timetable.block_id(logical_date or dag_run.run_after) }}",
        close_at: str = "{{ dag.timetable.block_closes_at(logical_date or dag_run.run_after) }}",
        transfer_backend: str = "{{ var.value.get('rawflow_transfer_backend', 'gfal2') }}",
        catalogue_conn_id: str = "rawflow_catalogue",
        storage_conn_id: str = "rawflow_storage",
        fts3_conn_id: str = "rawflow_fts3",
        sites_path: str | None = None,
        multihop: bool = False,
        recheck_seconds: float = 30.0,
        archive_poll_seconds: float = 5.0,
        trigger_poll_seconds: float = 2.0,
        max_attempts: int | str = "{{ var.value.get('rawflow_max_attempts', 3) }}",
        retransfer_backoff_seconds: float | str = "{{ var.value.get('rawflow_retransfer_backoff_seconds', 60) }}",
        chunk_parallel: int = 4,
        fts_timeout_seconds: float = 6 * 3600.0,
        # A derived block (RTRAW, ESD) closes after its parent and keep-up, at most this long after the parent
        # closed (rawflow.processing.closing); while held open it is asked again every close_recheck_seconds.
        close_max_wait_hours: float | str = "{{ var.value.get('rawflow_derived_close_max_wait_hours', 12) }}",
        close_recheck_seconds: float | str = "{{ var.value.get('rawflow_derived_close_recheck_seconds', 60) }}",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.site = site
        self.data_type = data_type
        self.block_id = block_id
        self.close_at = close_at
        self.transfer_backend = transfer_backend
        self.catalogue_conn_id = catalogue_conn_id
        self.storage_conn_id = storage_conn_id
        self.fts3_conn_id = fts3_conn_id
        self.sites_path = sites_path
        self.multihop = multihop
        self.recheck_seconds = recheck_seconds
        self.archive_poll_seconds = archive_poll_seconds
        self.trigger_poll_seconds = trigger_poll_seconds
        self.max_attempts = max_attempts
        self.retransfer_backoff_seconds = retransfer_backoff_seconds
        self.chunk_parallel = chunk_parallel
        self.fts_timeout_seconds = fts_timeout_seconds
        self.close_max_wait_hours = close_max_wait_hours
        self.close_recheck_seconds = close_recheck_seconds

    # -- entry points -------------------------------------------------------------------------------------

    def execute(self, context: Any) -> dict[str, Any]:
        return self._round(context, totals=None)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = event or {}
        self._raise_on_trigger_error(event)
        self.log.info("woken: %s", event.get("reason"))
        return self._round(context, totals=event.get("totals"))

    def execute_transfers_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """FTS3 jobs of the round are over: collect and validate on the worker, then carry on."""
        from rawflow.replication import SubmittedChunk

        event = event or {}
        self._raise_on_trigger_error(event)
        self.log.info("FTS3 jobs finished: %s", event.get("jobs"))
        submitted = context["ti"].xcom_pull(
            task_ids=self.task_id, key=FTS_SUBMITTED, map_indexes=context["ti"].map_index
        )
        chunks = [SubmittedChunk.from_dict(raw) for raw in submitted or []]
        return self._round(context, totals=event.get("totals"), submitted=chunks)

    def _raise_on_trigger_error(self, event: dict[str, Any]) -> None:
        """A trigger that gave up reports why; a permanent reason fails the task at once, no retries."""
        from airflow.exceptions import AirflowException
        from airflow.sdk.exceptions import AirflowFailException

        if event.get("status") != "error":
            return
        message = f"{self.site}: {event.get('message', 'trigger failed')}"
        if event.get("permanent"):
            raise AirflowFailException(message)
        raise AirflowException(message)

    # -- one round ---------------------------------------------------------------------------------------

    def _round(self, context: Any, totals: dict[str, Any] | None, submitted: list[Any] | None = None) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from rawflow.errors import PermanentError
        from rawflow.monitoring import record_progress
        from rawflow.naming import DataType
        from rawflow.planning import RetryPolicy
        from rawflow.replication import RoundOutcome, RoundSettings, run_site_round
        from rawflow.sites import load_sites
        from rawflow_airflow.hooks.catalogue import CatalogueHook
        from rawflow_airflow.hooks.storage import StorageHook
        from rawflow_airflow.settings import sites_path

        settings = RoundSettings(
            site=self.site,
            data_type=DataType.parse(self.data_type),
            block_id=self.block_id,
            close_at=datetime.fromisoformat(str(self.close_at)),
            retry=RetryPolicy(
                max_attempts=int(self.max_attempts),
                backoff=timedelta(seconds=float(self.retransfer_backoff_seconds)),
            ),
            multihop=self.multihop,
            recheck_seconds=self.recheck_seconds,
            archive_poll_seconds=self.archive_poll_seconds,
            chunk_parallel=self.chunk_parallel,
            close_recheck_seconds=float(self.close_recheck_seconds),
        )
        sites = load_sites(self.sites_path or sites_path())
        catalogue_hook = CatalogueHook(self.catalogue_conn_id)
        catalogue = catalogue_hook.get_conn()
        storage = StorageHook(self.storage_conn_id).get_conn()
        db_url = catalogue_hook.quarantine_url()

        def record(progress: Any, bytes_at_site: int) -> None:
            record_progress(db_url, settings.data_type.value, settings.block_id, settings.site, progress, bytes_at_site)

        try:
            result = run_site_round(
                settings,
                catalogue=catalogue,
                sites=sites,
                storage=storage,
                transfertool=self._transfertool,
                totals=totals,
                submitted=submitted,
                record=record,
                reconcile=(lambda: self._reconcile(catalogue, storage, sites)) if self._announced() else None,
                close_gate=self._close_gate(catalogue, catalogue_hook.quarantine_url(), settings),
            )
        except PermanentError as exc:
            raise AirflowFailException(f"{settings.block} at {self.site}: {exc}") from exc
        finally:
            catalogue.close()

        summary = result.summary(settings.block)
        progress = result.progress
        self.log.info(
            "%s at %s: %s — assigned %d, processed %d, problematic %d, pending %d",
            settings.block,
            self.site,
            progress.status,
            progress.assigned,
            progress.processed,
            progress.problematic,
            progress.pending,
        )
        if result.outcome is RoundOutcome.DONE:
            return summary
        if result.outcome is RoundOutcome.PROBLEMATIC:
            # Retrying cannot help: the files used up their attempts.
            raise BlockSiteProblematic(result.message)
        if result.outcome is RoundOutcome.WAIT_FTS:
            context["ti"].xcom_push(key=FTS_SUBMITTED, value=[sub.to_dict() for sub in result.submitted])
            self.defer(
                trigger=Fts3JobsTrigger(
                    job_ids=result.job_ids,
                    fts3_conn_id=self.fts3_conn_id,
                    poll_interval=self.trigger_poll_seconds,
                    totals=dict(result.totals),
                    timeout_seconds=self.fts_timeout_seconds,
                ),
                method_name="execute_transfers_complete",
                timeout=timedelta(seconds=self.fts_timeout_seconds + 600),
            )
        wake_at = result.wake_at or datetime.now(UTC)
        self.defer(
            trigger=BlockActivityTrigger(
                catalogue_conn_id=self.catalogue_conn_id,
                data_type=settings.data_type.value,
                block_id=self.block_id,
                known_files=result.known_files,
                known_open=result.known_open,
                wake_at=wake_at.isoformat(),
                poll_interval=self.trigger_poll_seconds,
                totals=dict(result.totals),
            ),
            method_name="execute_complete",
            # The trigger fires by wake_at itself; this bound only catches a triggerer that lost it.
            timeout=max(wake_at - datetime.now(UTC), timedelta(0)) + timedelta(hours=1),
        )
        raise AssertionError("defer() returned")  # pragma: no cover - defer always raises

    def _close_gate(self, catalogue: Any, jobs_url: str, settings: Any) -> Any:
        """For a derived block (RTRAW, ESD): the domain's close decision over the catalogue and the jobs table."""
        from rawflow.naming import DERIVATION
        from rawflow.processing.closing import derived_close
        from rawflow.processing.jobs import JobStore

        if settings.data_type not in DERIVATION:
            return None
        max_wait = timedelta(hours=float(self.close_max_wait_hours))

        def gate(now: datetime) -> Any:
            jobs = JobStore(jobs_url)
            try:
                return derived_close(catalogue, jobs, settings.data_type, settings.block_id, now=now, max_wait=max_wait)
            finally:
                jobs.close()

        return gate

    def _transfertool(self) -> Any:
        from rawflow_airflow.hooks.transfer import TransfertoolHook

        return TransfertoolHook(
            str(self.transfer_backend), storage_conn_id=self.storage_conn_id, fts3_conn_id=self.fts3_conn_id
        ).get_conn()

    def _announced(self) -> bool:
        """Whether files of this type arrive by announcement (RAW, RTRAW), so lost ones are reconciled from the
        Tier-0 before the block closes. ESD is only made by keep-up, which registers it with its lineage: a
        file at the Tier-0 that keep-up did not register failed its output check and must not be registered."""
        from rawflow.naming import DataType
        from rawflow.ops.reconcile import DATA_TYPES

        return DataType.parse(self.data_type) in DATA_TYPES

    def _reconcile(self, catalogue: Any, storage: Any, sites: Any) -> None:
        """Register files the Tier-0 holds that no announcement brought (the broker lost them)."""
        from rawflow.naming import DataType
        from rawflow.notify import LogNotifier
        from rawflow.quarantine import Quarantine
        from rawflow.receiver import Reconciler
        from rawflow_airflow.hooks.catalogue import CatalogueHook

        quarantine = Quarantine(CatalogueHook(self.catalogue_conn_id).quarantine_url())
        quarantine.create_schema()
        report = Reconciler(catalogue, storage, sites, quarantine, LogNotifier(self.log)).reconcile_block(
            DataType.parse(self.data_type), self.block_id
        )
        self.log.info("reconciled before close: %s", report)
