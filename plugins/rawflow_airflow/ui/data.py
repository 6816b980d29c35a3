"""The view's data, shared by the HTML pages and the JSON API (one function per panel)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rawflow.catalogue.base import parse_block_name, utc_now
from rawflow.errors import PermanentError
from rawflow.kafka import Topics
from rawflow.monitoring import MonitoringStore, SiteCell, drill_down_from_catalogue, kafka_status, quarantine_counts
from rawflow.naming import day_zone
from rawflow_airflow.ui import schemas
from rawflow_airflow.ui.sources import BLOCK_DAGS, Sources, block_runs

MAX_DAYS = 366
KAFKA_TIMEOUT_SECONDS = 3.0


def cell_out(cell: SiteCell) -> schemas.SiteCellOut:
    return schemas.SiteCellOut(
        site=cell.site,
        status=cell.status,
        assigned=cell.assigned,
        processed=cell.processed,
        problematic=cell.problematic,
        pending=cell.pending,
        processed_pct=round(cell.processed_pct, 1),
        bytes=cell.bytes,
        last_error=cell.last_error,
        updated_at=cell.updated_at,
        problematic_since=cell.problematic_since,
        alerted_at=cell.alerted_at,
    )


def matrix(sources: Sources, days: int, data_type: str | None) -> schemas.MatrixOut:
    from rawflow_airflow.timetables import receiving_day_timezone

    # "Today" is the receiving day in the configured zone (a block is a calendar day there).
    today = utc_now().astimezone(day_zone(receiving_day_timezone()))
    result = sources.store().matrix(min(max(days, 1), MAX_DAYS), data_type=data_type, today=today)
    runs: dict[str, dict[str, str]] = {}
    for kind in {row.data_type for row in result.rows}:
        runs[kind] = block_runs(kind, [row.block_id for row in result.rows if row.data_type == kind])
    return schemas.MatrixOut(
        days=result.days,
        first_block_id=result.first_block_id,
        sites=sources.order_sites(result.sites),
        rows=[
            schemas.MatrixRowOut(
                block=row.block,
                data_type=row.data_type,
                block_id=row.block_id,
                status=row.status,
                run_id=runs.get(row.data_type, {}).get(row.block_id),
                sites={site: cell_out(cell) for site, cell in row.cells.items()},
            )
            for row in result.rows
        ],
    )


def block(
    sources: Sources,
    name: str,
    *,
    problems_only: bool,
    limit: int,
    offset: int,
    search: str | None = None,
    site: str | None = None,
    failed_only: bool = False,
) -> schemas.BlockOut:
    data_type, block_id = parse_block_name(name)
    store = sources.store()
    policy = sources.settings().policy
    # Where the data type goes, with its own shares: a file without a replica at a site that holds every file
    # (full share, the archive when the type is archived), or at a partial-share site whose share includes it,
    # is not copied yet.
    typed = policy.for_type(data_type) if policy is not None else None
    targets = list(typed.sites.values()) if typed else []
    expected_at = [s.name for s in targets if (s.archive and typed is not None and typed.to_tape) or s.share >= 1]
    assigned_at = [s for s in targets if s.is_destination and 0 < s.share < 1]
    filters: dict[str, Any] = {
        "problems_only": problems_only,
        "limit": limit,
        "offset": offset,
        "search": search or None,
        "site": site or None,
        "failed_only": failed_only,
        "expected_at": expected_at,
        "assigned_at": assigned_at,
    }
    if sources.settings().catalogue_is_sql and store.has_catalogue_tables:
        view = store.drill_down(data_type, block_id, **filters)
    else:
        catalogue = sources.catalogue()
        try:
            view = drill_down_from_catalogue(
                catalogue, data_type, block_id, status=store.block_cells(data_type, block_id), **filters
            )
        finally:
            catalogue.close()
    return schemas.BlockOut(
        audits=_audits(store, view.block),
        block=view.block,
        data_type=view.data_type,
        block_id=view.block_id,
        dag_id=BLOCK_DAGS.get(view.data_type),
        run_id=block_runs(view.data_type, [view.block_id]).get(view.block_id),
        total_files=view.total_files,
        matching_files=view.matching_files,
        offset=view.offset,
        # Every target of the block's type, even before its first copy: an empty column reads "not copied yet".
        sites=sources.order_sites(set(view.sites) | set(view.status) | set(_type_targets(sources, view.data_type))),
        status={site: cell_out(cell) for site, cell in view.status.items()},
        files=[
            schemas.FileOut(
                lfn=f.lfn,
                size=f.size,
                adler32=f.adler32,
                replicas={
                    site: schemas.ReplicaOut(state=r.state, error=r.error, attempts=r.attempts, updated_at=r.updated_at)
                    for site, r in f.replicas.items()
                },
            )
            for f in view.files
        ],
    )


def _type_targets(sources: Sources, data_type: str) -> list[str]:
    """The Tier-0 and the sites ``data_type``'s blocks go to (the site order's, if the policy is unreadable)."""
    from rawflow.planning import targets

    policy = sources.settings().policy
    if policy is None:
        return list(sources.settings().site_order)
    return [policy.tier0.name, *(s.name for s in targets(policy, data_type=data_type))]


def series(sources: Sources, hours: float, bucket_minutes: float) -> schemas.SeriesOut:
    now = utc_now()
    since = now - timedelta(hours=hours)
    bucket = timedelta(minutes=bucket_minutes)
    store = sources.store()
    policy = sources.settings().policy
    # The Tier-0 is where data lands (its replicas are registered, not transferred): not a throughput.
    source_site = policy.tier0.name if policy is not None else None
    points = [p for p in store.time_series(since, bucket) if p.site != source_site]
    seconds = bucket.total_seconds()

    def elapsed(start: datetime) -> float:
        """A bucket's length so far: the current bucket is not over, its rate is over the time elapsed."""
        return max(1.0, min(seconds, (now - start).total_seconds()))

    return schemas.SeriesOut(
        since=since,
        bucket_seconds=int(seconds),
        available=store.has_catalogue_tables,
        points=[
            schemas.SeriesPointOut(
                bucket=p.bucket,
                site=p.site,
                good_files=p.good_files,
                good_bytes=p.good_bytes,
                bad_files=p.bad_files,
                throughput_bytes_per_s=p.good_bytes / elapsed(p.bucket),
                error_rate=round(p.error_rate, 4),
            )
            for p in points
        ],
    )


def plan(sources: Sources, name: str) -> dict[str, Any]:
    """The block's dry run (rawflow.dry_run.plan_now: the block round's planner, nothing moved), as JSON."""
    from rawflow.dry_run import plan_now
    from rawflow.errors import NotFoundError

    data_type, block_id = parse_block_name(name)
    policy = sources.settings().policy
    if policy is None:
        raise PermanentError("the site policy (Variable rawflow_sites_path) could not be read")
    catalogue = sources.catalogue()
    try:
        dry = plan_now(catalogue, policy, data_type, block_id, retry=_retry_policy())
    finally:
        catalogue.close()
    if dry is None:
        raise NotFoundError(f"block {name} is not in the catalogue")
    return dry.to_dict()


def _retry_policy() -> Any:
    """The block DAG's retry settings (its Variables, with the DAG's defaults)."""
    from rawflow.planning import RetryPolicy

    try:
        from airflow.models import Variable

        attempts = int(Variable.get("rawflow_max_attempts", default_var=3))
        backoff = float(Variable.get("rawflow_retransfer_backoff_seconds", default_var=60))
    except Exception:
        attempts, backoff = 3, 60.0
    return RetryPolicy(max_attempts=attempts, backoff=timedelta(seconds=backoff))


def quarantine_examples(sources: Sources, counts: dict[str, int]) -> list[schemas.QuarantineExampleOut]:
    """For each reason, its oldest quarantined message: when, which file, why (one small query per reason)."""
    from rawflow.quarantine import Quarantine

    if not counts:
        return []
    quarantine = Quarantine(sources.store().engine)
    examples = []
    for reason, messages in sorted(counts.items(), key=lambda item: -item[1]):
        oldest = quarantine.list(reason=reason, limit=1) if reason in {r.value for r in _reasons()} else []
        if oldest:
            m = oldest[0]
            examples.append(
                schemas.QuarantineExampleOut(
                    reason=reason, messages=messages, id=m.id, received_at=m.received_at, lfn=m.lfn, why=m.reason_text
                )
            )
    return examples


def _reasons() -> list[Any]:
    from rawflow.messages import Reason

    return list(Reason)


def kafka(sources: Sources) -> schemas.KafkaOut:
    settings = sources.settings()
    quarantined = quarantine_counts(sources.store().engine)
    common: dict[str, Any] = {
        "group": settings.kafka_group,
        "quarantined": quarantined,
        "quarantined_total": sum(quarantined.values()),
        "examples": quarantine_examples(sources, quarantined),
    }
    if settings.kafka_bootstrap is None:
        return schemas.KafkaOut(
            configured=False,
            bootstrap=None,
            reachable=False,
            error="no rawflow_kafka connection",
            total_lag=0,
            partitions=[],
            **common,
        )
    status = kafka_status(
        settings.kafka_bootstrap, settings.kafka_group, Topics().announce, timeout=KAFKA_TIMEOUT_SECONDS
    )
    return schemas.KafkaOut(
        configured=True,
        bootstrap=status.bootstrap,
        reachable=status.reachable,
        error=status.error,
        total_lag=status.total_lag,
        partitions=[
            schemas.PartitionLagOut(
                topic=p.topic, partition=p.partition, committed=p.committed, low=p.low, high=p.high, lag=p.lag
            )
            for p in status.partitions
        ],
        **common,
    )


def _audits(store: MonitoringStore, block: str) -> dict[str, schemas.SiteAuditOut]:
    """The block's latest destination audits, from the ``site_audits`` table beside the monitoring tables."""
    from rawflow.ops.audit import AuditStore

    return {
        site: schemas.SiteAuditOut(**{k: v for k, v in row.items() if k != "block"})
        for site, row in AuditStore(store.engine).latest(block).items()
    }


def processing(sources: Sources, days: int) -> dict[str, Any]:
    """Keep-up processing per block and run (see rawflow.processing.status)."""
    from rawflow.processing.status import processing_status

    return processing_status(sources.store().engine, days=days).to_dict()


def campaigns_folder() -> str:
    """The ``rawflow_campaigns_dir`` Variable, else ``$RAWFLOW_CAMPAIGNS_DIR``, else the repository's folder."""
    import os
    from pathlib import Path

    from airflow.sdk import Variable

    value = Variable.get("rawflow_campaigns_dir", default=None) or os.environ.get("RAWFLOW_CAMPAIGNS_DIR")
    return str(value) if value else str(Path(__file__).resolve().parents[3] / "config" / "campaigns")


def campaigns(sources: Sources) -> list[dict[str, Any]]:
    """The ProdSys table (see rawflow.processing.campaign_round.campaigns_overview): Processed % from the
    outputs' replicas validated at every destination, read from the catalogue."""
    from rawflow.processing.campaign_round import campaigns_overview
    from rawflow.processing.jobs import JobStore

    catalogue = sources.catalogue()
    try:
        return campaigns_overview(campaigns_folder(), JobStore(sources.store().engine), catalogue)
    finally:
        catalogue.close()
