"""Operators of the daily block DAG: replicate one block to one site, round after round, until it is done.

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
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator

from rawflow_airflow.triggers.block_activity import BlockActivityTrigger
from rawflow_airflow.triggers.fts3_jobs import Fts3JobsTrigger

FTS_SUBMITTED = "fts3_submitted"


class BlockSiteProblematic(Exception):
    """Some files could not be brought to the site within the retry limit."""


class ReplicateBlockSiteOperator(BaseOperator):
    template_fields: Sequence[str] = (
        "site",
        "data_type",
        "block_id",
        "close_at",
        "transfer_backend",
        "retransfer_backoff_seconds",
        "max_attempts",
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

    def _record(self, catalogue: Any, data_type: Any, site: str, progress: Any) -> None:
        """Persist the round's progress for the Rawflow view and alerts; monitoring never fails a transfer."""
        from rawflow.catalogue.base import ReplicaState
        from rawflow.monitoring import record_progress
        from rawflow_airflow.hooks.catalogue import CatalogueHook

        try:
            sizes = {f.lfn: f.size for f in catalogue.files_in_block(data_type, self.block_id)}
            states = catalogue.replica_states(block=(data_type, self.block_id), site=site)
            held = (ReplicaState.VALIDATED, ReplicaState.ARCHIVED)
            bytes_at_site = sum(
                sizes.get(lfn, 0) for lfn, by in states.items() if site in by and by[site].state in held
            )
            db_url = CatalogueHook(self.catalogue_conn_id).quarantine_url()
            record_progress(db_url, data_type.value, self.block_id, site, progress, bytes_at_site)
        except Exception as exc:
            self.log.warning("could not record progress of %s at %s: %s", self.block_id, site, exc)

    # -- entry points -------------------------------------------------------------------------------------

    def _transfertool(self) -> Any:
        from rawflow_airflow.hooks.transfer import TransfertoolHook

        return TransfertoolHook(
            str(self.transfer_backend), storage_conn_id=self.storage_conn_id, fts3_conn_id=self.fts3_conn_id
        ).get_conn()

    def _count(self, result: Any, totals: dict[str, Any]) -> None:
        totals["copied"] += result.copied
        totals["skipped"] += result.skipped
        totals["bytes"] += result.bytes
        totals["failed"] += len(result.failed)
        for lfn, reason in list(result.failed.items())[:5]:
            self.log.warning("%s → %s failed: %s", lfn, result.site, reason)

    def _collect(
        self, submitted: list[dict[str, Any]], catalogue: Any, sites: Any, storage: Any, totals: dict[str, Any]
    ) -> None:
        """Record the outcome of finished FTS3 jobs, then validate the replicas they wrote."""
        from rawflow import replication

        tool = self._transfertool()
        for raw in submitted:
            sub = replication.SubmittedChunk.from_dict(raw)
            result = replication.collect_chunk(sub, catalogue=catalogue, transfertool=tool)
            if result is None:  # the trigger saw them finish; a job still running here is a backend bug
                raise RuntimeError(f"chunk {sub.chunk.key}: FTS3 jobs {sub.job_ids} not finished")
            replication.validate_chunk(sub.chunk, catalogue=catalogue, sites=sites, storage=storage)
            self._count(result, totals)

    def execute(self, context: Any) -> dict[str, Any]:
        return self._round(context, totals=None)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        self.log.info("woken: %s", event)
        totals = (event or {}).get("totals")
        return self._round(context, totals=totals)

    def execute_transfers_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """FTS3 jobs of the round are over: collect and validate on the worker, then carry on."""
        self.log.info("FTS3 jobs finished: %s", (event or {}).get("jobs"))
        submitted = context["ti"].xcom_pull(
            task_ids=self.task_id, key=FTS_SUBMITTED, map_indexes=context["ti"].map_index
        )
        return self._round(context, totals=(event or {}).get("totals"), submitted=submitted or [])

    # -- one round ---------------------------------------------------------------------------------------

    def _round(
        self, context: Any, totals: dict[str, Any] | None, submitted: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        from rawflow import replication
        from rawflow.catalogue.base import utc_now
        from rawflow.naming import DataType
        from rawflow.planning import RetryPolicy
        from rawflow.sites import load_sites
        from rawflow.verify import site_reachable, verify_site
        from rawflow_airflow.hooks.catalogue import CatalogueHook
        from rawflow_airflow.hooks.storage import StorageHook
        from rawflow_airflow.settings import sites_path

        totals = dict(totals or {"rounds": 0, "copied": 0, "skipped": 0, "bytes": 0, "failed": 0})
        totals["rounds"] += 1
        data_type = DataType.parse(self.data_type)
        sites = load_sites(self.sites_path or sites_path())
        site = sites[self.site]
        retry = RetryPolicy(
            max_attempts=int(self.max_attempts),
            backoff=timedelta(seconds=float(self.retransfer_backoff_seconds)),
        )
        catalogue = CatalogueHook(self.catalogue_conn_id).get_conn()
        storage_hook = StorageHook(self.storage_conn_id)
        storage = storage_hook.get_conn()
        try:
            now = utc_now()
            close_at = datetime.fromisoformat(str(self.close_at))
            block = catalogue.get_block(data_type, self.block_id)
            if block is not None and block.is_open and now >= close_at:
                catalogue.close_block(data_type, self.block_id)
                self.log.info("block %s-%s closed (end of day + grace passed)", data_type.value, self.block_id)
                block = catalogue.get_block(data_type, self.block_id)
            # A block nobody registered a file into by its closing time is empty and closed.
            closed = (block is not None and not block.is_open) or (block is None and now >= close_at)

            plan = replication.plan_block(
                catalogue, sites, data_type, self.block_id, only=[site.name], multihop=self.multihop, retry=retry
            )
            site_plan = plan.site(site.name)
            reachable, why = site_reachable(storage, site) if site_plan.chunks else (True, None)
            if submitted is not None:
                self._collect(submitted, catalogue, sites, storage, totals)
            elif not reachable:
                # An outage is waited out; it must not use up the files' transfer attempts.
                self.log.warning("%s unreachable, %d files wait: %s", site.name, site_plan.planned, why)
            elif site_plan.chunks:
                tool = self._transfertool()
                self.log.info(
                    "round %d: %d chunks, %d files to %s via %s",
                    totals["rounds"],
                    len(site_plan.chunks),
                    site_plan.planned,
                    site.name,
                    tool.name,
                )
                if tool.name == "fts3":
                    jobs = [
                        replication.submit_chunk(
                            c, catalogue=catalogue, sites=sites, transfertool=tool, storage=storage
                        )
                        for c in site_plan.chunks
                    ]
                    job_ids = [j for sub in jobs for j in sub.job_ids]
                    if job_ids:
                        context["ti"].xcom_push(key=FTS_SUBMITTED, value=[sub.to_dict() for sub in jobs])
                        self.defer(
                            trigger=Fts3JobsTrigger(
                                job_ids=job_ids,
                                fts3_conn_id=self.fts3_conn_id,
                                poll_interval=self.trigger_poll_seconds,
                                totals=totals,
                            ),
                            method_name="execute_transfers_complete",
                        )
                    self._collect([sub.to_dict() for sub in jobs], catalogue, sites, storage, totals)
                else:
                    for chunk in site_plan.chunks:
                        result = replication.replicate_chunk(
                            chunk, catalogue=catalogue, sites=sites, transfertool=tool, storage=storage
                        )
                        replication.validate_chunk(chunk, catalogue=catalogue, sites=sites, storage=storage)
                        self._count(result, totals)
            if site.archive:
                polled = replication.poll_archive(
                    catalogue=catalogue, sites=sites, storage=storage, data_type=data_type, block_id=self.block_id
                )
                if polled.archived:
                    self.log.info("%d files confirmed on tape", len(polled.archived))
            progress = replication.block_status(catalogue, sites, data_type, self.block_id, retry=retry)[site.name]
            if closed and reachable and progress.pending == 0 and not site.archive and not totals.get("verified"):
                # Once closed, check every good replica once more: a file damaged on disk since its
                # validation becomes BAD here and is retransferred by the following rounds.
                verified = verify_site(catalogue, storage, site, data_type, self.block_id)
                totals["verified"] = verified.unreachable == 0
                if verified.bad:
                    self.log.warning(
                        "%d replicas at %s failed verification: %s", len(verified.bad), site.name, verified.bad
                    )
                    progress = replication.block_status(catalogue, sites, data_type, self.block_id, retry=retry)[
                        site.name
                    ]
            self._record(catalogue, data_type, site.name, progress)
            block = catalogue.get_block(data_type, self.block_id)
            known_files = block.files if block is not None else 0
            known_open = block.is_open if block is not None else True
        finally:
            catalogue.close()

        summary = {**progress.to_dict(), **totals, "block": f"{data_type.value}-{self.block_id}"}
        summary["reasons"] = dict(list(summary["reasons"].items())[:20])
        self.log.info(
            "%s at %s: %s — assigned %d, processed %d, problematic %d, pending %d",
            summary["block"],
            site.name,
            progress.status,
            progress.assigned,
            progress.processed,
            progress.problematic,
            progress.pending,
        )
        if closed and progress.pending == 0:
            if progress.problematic:
                reasons = "; ".join(f"{lfn}: {why}" for lfn, why in list(progress.reasons.items())[:10])
                raise BlockSiteProblematic(
                    f"{summary['block']} at {site.name} is Problematic: {progress.problematic} of "
                    f"{progress.assigned} files failed after {self.max_attempts} attempts — {reasons}"
                )
            return summary
        # Not finished: sleep in the triggerer until something can change. New files or the block closing
        # wake it at once; pending files (backoff, hops, tape migration) are looked at again after a while.
        # Bad replicas become eligible again after the retransfer backoff: look no later than that.
        recheck = min(self.recheck_seconds, float(self.retransfer_backoff_seconds))
        wait = timedelta(seconds=self.archive_poll_seconds if site.archive else recheck)
        wake_at = utc_now() + wait if progress.pending else close_at
        if not closed:
            wake_at = min(wake_at, close_at)
        self.defer(
            trigger=BlockActivityTrigger(
                catalogue_conn_id=self.catalogue_conn_id,
                data_type=data_type.value,
                block_id=self.block_id,
                known_files=known_files,
                known_open=known_open,
                wake_at=wake_at.isoformat(),
                poll_interval=self.trigger_poll_seconds,
                totals=totals,
            ),
            method_name="execute_complete",
        )
