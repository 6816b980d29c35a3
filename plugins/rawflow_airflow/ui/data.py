"""The view's data, shared by the HTML pages and the JSON API (one function per panel)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rawflow.catalogue.base import parse_block_name, utc_now
from rawflow.kafka import Topics
from rawflow.monitoring import MonitoringStore, SiteCell, drill_down_from_catalogue, kafka_status, quarantine_counts
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
    result = sources.store().matrix(min(max(days, 1), MAX_DAYS), data_type=data_type)
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


def block(sources: Sources, name: str, *, problems_only: bool, limit: int, offset: int) -> schemas.BlockOut:
    data_type, block_id = parse_block_name(name)
    store = sources.store()
    if sources.settings().catalogue_is_sql and store.has_catalogue_tables:
        view = store.drill_down(data_type, block_id, problems_only=problems_only, limit=limit, offset=offset)
    else:
        catalogue = sources.catalogue()
        try:
            view = drill_down_from_catalogue(
                catalogue,
                data_type,
                block_id,
                problems_only=problems_only,
                limit=limit,
                offset=offset,
                status=store.block_cells(data_type, block_id),
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
        sites=sources.order_sites(set(view.sites) | set(view.status)),
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


def series(sources: Sources, hours: float, bucket_minutes: float) -> schemas.SeriesOut:
    since = utc_now() - timedelta(hours=hours)
    bucket = timedelta(minutes=bucket_minutes)
    store = sources.store()
    points = store.time_series(since, bucket)
    seconds = bucket.total_seconds()
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
                throughput_bytes_per_s=p.good_bytes / seconds,
                error_rate=round(p.error_rate, 4),
            )
            for p in points
        ],
    )


def kafka(sources: Sources) -> schemas.KafkaOut:
    settings = sources.settings()
    quarantined = quarantine_counts(sources.store().engine)
    common: dict[str, Any] = {
        "group": settings.kafka_group,
        "quarantined": quarantined,
        "quarantined_total": sum(quarantined.values()),
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
