"""Prometheus exposition of Rawflow's state, served at ``/rawflow/metrics`` by the view's app.

Gathered at scrape time (a collector, no background thread): replicas (files and bytes) per site and state,
the block × site progress totals and how many block × site pairs are in each status, the receiver's consumer
lag per topic/partition and whether the broker answers, and the quarantine per reason.

No authentication, on purpose: Prometheus scrapers cannot do Airflow's login, and every value here is an
aggregate count — no file name, error text, host credential or token. Deployments that must not show even
the counts restrict the path at their ingress, as for Airflow's own health endpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from rawflow.catalogue.base import Catalogue
    from rawflow.monitoring import MonitoringStore
    from rawflow_airflow.ui.sources import Sources

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KAFKA_TIMEOUT_SECONDS = 2.0
# Counting every replica by site and state reads the whole replicas table (≈1.5 s for 1.7 M replicas on
# Postgres): computed at most once a minute per process, whatever the scrape interval.
REPLICA_COUNTS_TTL_SECONDS = 60.0
_replica_counts: dict[str, tuple[float, dict[tuple[str, str], tuple[int, int]]]] = {}
_replica_counts_lock = threading.Lock()


def replica_counts(store: MonitoringStore) -> dict[tuple[str, str], tuple[int, int]]:
    key = str(store.engine.url)
    with _replica_counts_lock:
        cached = _replica_counts.get(key)
        if cached is None or time.monotonic() - cached[0] > REPLICA_COUNTS_TTL_SECONDS:
            cached = _replica_counts[key] = (time.monotonic(), store.replica_counts())
        return cached[1]


class RawflowCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.monotonic()
        up = GaugeMetricFamily(
            "rawflow_monitoring_source_up", "Whether a data source answered this scrape", labels=["source"]
        )
        try:
            yield from self._database()
            up.add_metric(["database"], 1)
        except Exception:
            log.exception("metrics: monitoring database")
            up.add_metric(["database"], 0)
        try:
            yield from self._kafka()
            up.add_metric(["kafka"], 1)
        except Exception:
            log.exception("metrics: Kafka")
            up.add_metric(["kafka"], 0)
        yield up
        took = GaugeMetricFamily("rawflow_metrics_scrape_seconds", "Time spent gathering these metrics")
        took.add_metric([], time.monotonic() - started)
        yield took

    def _database(self) -> Iterator[GaugeMetricFamily]:
        from rawflow.monitoring import quarantine_counts

        store = self.sources.store()
        files = GaugeMetricFamily("rawflow_replica_files", "Replicas per site and state", labels=["site", "state"])
        size = GaugeMetricFamily(
            "rawflow_replica_bytes", "Bytes of the replicas per site and state", labels=["site", "state"]
        )
        for (site, state), (n, nbytes) in sorted(replica_counts(store).items()):
            files.add_metric([site, state], n)
            size.add_metric([site, state], nbytes)
        yield files
        yield size

        progress = GaugeMetricFamily(
            "rawflow_block_site_files",
            "Files of all recorded blocks per site, by progress (assigned, processed, problematic, pending)",
            labels=["site", "progress"],
        )
        moved = GaugeMetricFamily(
            "rawflow_block_site_bytes", "Bytes moved per site over recorded blocks", labels=["site"]
        )
        for site, totals in sorted(store.totals_by_site().items()):
            for key in ("assigned", "processed", "problematic", "pending"):
                progress.add_metric([site, key], totals[key])
            moved.add_metric([site], totals["bytes"])
        yield progress
        yield moved

        statuses = GaugeMetricFamily(
            "rawflow_block_sites", "Block × site pairs in the last 30 days per status", labels=["site", "status"]
        )
        counts: dict[tuple[str, str], int] = {}
        for row in store.matrix(30).rows:
            for cell in row.cells.values():
                counts[(cell.site, cell.status)] = counts.get((cell.site, cell.status), 0) + 1
        for (site, status), n in sorted(counts.items()):
            statuses.add_metric([site, status], n)
        yield statuses

        quarantined = GaugeMetricFamily(
            "rawflow_quarantine_messages", "Announcements still in quarantine, by reason", labels=["reason"]
        )
        for reason, n in sorted(quarantine_counts(store.engine).items()):
            quarantined.add_metric([reason], n)
        yield quarantined
        yield from keepup_job_metrics(store)
        try:
            # Families are yielded only once computed: a failure here leaves the other metrics whole.
            yield from campaign_metrics(store, catalogue=self.sources.catalogue)
        except Exception:
            log.exception("metrics: campaigns")

    def _kafka(self) -> Iterator[GaugeMetricFamily]:
        from rawflow.kafka import Topics
        from rawflow.monitoring import kafka_status

        settings = self.sources.settings()
        reachable = GaugeMetricFamily("rawflow_kafka_broker_up", "Whether the Kafka broker answered")
        if settings.kafka_bootstrap is None:
            reachable.add_metric([], 0)
            yield reachable
            return
        status = kafka_status(
            settings.kafka_bootstrap, settings.kafka_group, Topics().announce, timeout=KAFKA_TIMEOUT_SECONDS
        )
        reachable.add_metric([], 1 if status.reachable else 0)
        yield reachable
        lag = GaugeMetricFamily(
            "rawflow_kafka_consumer_lag",
            "Messages not yet committed by the receiver's group (high watermark − committed offset)",
            labels=["group", "topic", "partition"],
        )
        for p in status.partitions:
            lag.add_metric([status.group, p.topic, str(p.partition)], p.lag)
        yield lag


def keepup_job_metrics(store: MonitoringStore) -> Iterator[GaugeMetricFamily]:
    """Keep-up jobs per payload and state (the jobs table lives in the same database)."""
    import sqlalchemy as sa

    from rawflow.processing.jobs import JobStore
    from rawflow.processing.planning import STAGES, JobPhase

    jobs = GaugeMetricFamily(
        "rawflow_keepup_jobs", "Keep-up processing jobs per payload and state", labels=["payload", "state"]
    )
    counts: dict[tuple[str, str], int] = {}
    if sa.inspect(store.engine).has_table("processing_jobs"):
        counts = JobStore(store.engine, create=False).counts()
    for payload in STAGES:  # every series present, zero included, so alerts on rate() see it start
        for state in JobPhase:
            jobs.add_metric([payload, state.value], counts.get((payload, state.value), 0))
    yield jobs


def campaign_metrics(
    store: MonitoringStore, folder: str | None = None, *, catalogue: Callable[[], Catalogue] | None = None
) -> Iterator[GaugeMetricFamily]:
    """Per campaign: jobs by state and the fraction of input files processed — final outputs validated at
    every destination (the ProdSys table's columns). ``catalogue``: opens the catalogue (default: the SQL
    catalogue in the monitoring database)."""
    import sqlalchemy as sa

    from rawflow.processing.campaign_round import campaigns_overview
    from rawflow.processing.jobs import JobStore
    from rawflow.processing.planning import JobPhase
    from rawflow_airflow.ui.data import campaigns_folder

    jobs = GaugeMetricFamily("rawflow_campaign_jobs", "Campaign jobs per state", labels=["campaign", "state"])
    processed = GaugeMetricFamily(
        "rawflow_campaign_processed_ratio", "Input files processed / input files so far", labels=["campaign"]
    )
    if sa.inspect(store.engine).has_table("processing_jobs"):
        if catalogue is not None:
            opened = catalogue()
        else:
            from rawflow.catalogue.sql import SqlCatalogue

            opened = SqlCatalogue(store.engine.url.render_as_string(hide_password=False), create=False)
        try:
            rows = campaigns_overview(folder or campaigns_folder(), JobStore(store.engine, create=False), opened)
        finally:
            opened.close()
        for row in rows:
            if row["status"] == "Invalid":
                continue
            for state in JobPhase:
                jobs.add_metric([row["name"], state.value], row["jobs"].get(state.value, 0))
            processed.add_metric([row["name"]], row["processed"] / row["files"] if row["files"] else 0.0)
    yield jobs
    yield processed


def exposition(sources: Sources) -> bytes:
    """One scrape, in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RawflowCollector(sources))
    return generate_latest(registry)
