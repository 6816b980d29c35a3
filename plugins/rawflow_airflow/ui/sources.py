"""Where the view reads its data: Airflow's connections and variables, resolved in the API server process.

The monitoring database is the ``rawflow_catalogue`` connection's SQL URL (its ``quarantine_url`` for the
rucio backend); Kafka is the ``rawflow_kafka`` connection; the site order comes from ``rawflow_sites_path``.
Resolved settings are kept for a minute and database engines for the life of the process, so a page costs
a few queries and no connection set-up.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rawflow.catalogue.base import Catalogue
    from rawflow.monitoring import MonitoringStore
    from rawflow.sites import SitesConfig

SETTINGS_TTL_SECONDS = 60.0
BLOCK_DAGS = {"RAW": "rawflow_block_raw", "RTRAW": "rawflow_block_rtraw", "ESD": "rawflow_block_esd"}


@dataclass(frozen=True, slots=True)
class ViewSettings:
    db_url: str
    catalogue_is_sql: bool
    kafka_bootstrap: str | None
    kafka_group: str
    site_order: tuple[str, ...]
    # The site policy (shares, the archive), for the drill-down's "not in this site's share"; None if unreadable.
    policy: SitesConfig | None = None


class Sources:
    """Settings and clients for the view, shared by every request of the API server process."""

    def __init__(self, catalogue_conn_id: str = "rawflow_catalogue", kafka_conn_id: str = "rawflow_kafka") -> None:
        self.catalogue_conn_id = catalogue_conn_id
        self.kafka_conn_id = kafka_conn_id
        self._lock = threading.Lock()
        self._settings: tuple[float, ViewSettings] | None = None
        self._stores: dict[str, MonitoringStore] = {}

    def settings(self) -> ViewSettings:
        with self._lock:
            if self._settings is None or time.monotonic() - self._settings[0] > SETTINGS_TTL_SECONDS:
                self._settings = (time.monotonic(), self._resolve())
            return self._settings[1]

    def _resolve(self) -> ViewSettings:
        from rawflow_airflow.hooks.catalogue import CatalogueHook
        from rawflow_airflow.hooks.kafka import RawflowKafkaHook

        catalogue = CatalogueHook(self.catalogue_conn_id)
        extra = catalogue.get_connection(self.catalogue_conn_id).extra_dejson
        try:
            kafka = RawflowKafkaHook(self.kafka_conn_id).settings()
            bootstrap, group = kafka.bootstrap, kafka.group_id
        except Exception:
            # No Kafka connection configured: the Kafka panel says so instead of failing every page.
            bootstrap, group = None, "rawflow-receiver"
        return ViewSettings(
            db_url=catalogue.quarantine_url(),
            catalogue_is_sql=extra.get("backend", "sql") == "sql",
            kafka_bootstrap=bootstrap,
            kafka_group=group,
            site_order=_site_order(),
            policy=_policy(),
        )

    def store(self) -> MonitoringStore:
        from rawflow.monitoring import MonitoringStore

        url = self.settings().db_url
        with self._lock:
            store = self._stores.get(url)
            if store is None:
                store = self._stores[url] = MonitoringStore(url)
            return store

    def catalogue(self) -> Catalogue:
        """A catalogue client (for the drill-down when the catalogue is not in the monitoring database)."""
        from rawflow_airflow.hooks.catalogue import CatalogueHook

        return CatalogueHook(self.catalogue_conn_id).get_conn()

    def order_sites(self, sites: list[str] | tuple[str, ...] | Any) -> list[str]:
        """The sites in the policy's order (destinations, then the archive), unknown ones last by name."""
        order = {name: n for n, name in enumerate(self.settings().site_order)}
        return sorted(sites, key=lambda s: (order.get(s, len(order)), s))


def _policy() -> SitesConfig | None:
    try:
        from rawflow.sites import load_sites
        from rawflow_airflow.settings import sites_path

        return load_sites(sites_path())
    except Exception:
        return None


def _site_order() -> tuple[str, ...]:
    try:
        from rawflow.planning import targets
        from rawflow.sites import load_sites
        from rawflow_airflow.settings import sites_path

        sites = load_sites(sites_path())
        return tuple([sites.tier0.name, *(s.name for s in targets(sites))])
    except Exception:
        return ()


def block_runs(data_type: str, block_ids: list[str]) -> dict[str, str]:
    """block id → run id of the block DAG's newest run for that day (for links into the Airflow UI)."""
    if not block_ids:
        return {}

    import sqlalchemy as sa
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag_id = BLOCK_DAGS.get(data_type)
    if dag_id is None:
        return {}
    from rawflow.naming import receiving_day, receiving_day_bounds
    from rawflow_airflow.timetables import receiving_day_timezone

    # A run's block is its logical date's receiving day in the configured zone (BlockDayTimetable.block_id);
    # a manual run without a logical date belongs to the day it was triggered in.
    zone = receiving_day_timezone()
    first, _ = receiving_day_bounds(min(block_ids), zone)
    _, last = receiving_day_bounds(max(block_ids), zone)
    wanted = set(block_ids)
    in_range = sa.or_(
        sa.and_(DagRun.logical_date >= first, DagRun.logical_date < last),
        sa.and_(DagRun.logical_date.is_(None), DagRun.run_after >= first, DagRun.run_after < last),
    )
    query = (
        select(DagRun.run_id, DagRun.logical_date, DagRun.run_after)
        .where(DagRun.dag_id == dag_id, in_range)
        .order_by(DagRun.id)
    )
    runs: dict[str, str] = {}
    with create_session() as session:
        for run_id, logical_date, run_after in session.execute(query):
            moment = logical_date or run_after
            if moment is None:
                continue
            block_id = f"{receiving_day(moment, zone):%Y%m%d}"
            if block_id in wanted:
                runs[block_id] = run_id  # the newest run of a day wins
    return runs


def airflow_base_path() -> str:
    """The path prefix of the Airflow UI (``[api] base_url``), without a trailing slash."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "/").path.rstrip("/")
