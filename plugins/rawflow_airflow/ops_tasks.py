"""Task bodies of the operations units (reconciliation, destination audits), called from ``@task`` functions.

They only build clients from Airflow Connections and call the run-once units in ``rawflow.ops``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rawflow.catalogue.base import Catalogue
    from rawflow.ops.reconcile import Reconciler


def reconciler(
    catalogue: Catalogue,
    *,
    catalogue_conn_id: str = "rawflow_catalogue",
    storage_conn_id: str = "rawflow_storage",
    smtp_conn_id: str = "smtp_default",
    alert_to: list[str] | None = None,
) -> Reconciler:
    """A :class:`~rawflow.receiver.Reconciler` wired to the worker's connections (gfal2 runs in the worker)."""
    from rawflow.ops.reconcile import Reconciler
    from rawflow.quarantine import Quarantine
    from rawflow.sites import load_sites
    from rawflow_airflow.hooks.catalogue import CatalogueHook
    from rawflow_airflow.hooks.notify import SmtpNotifierHook
    from rawflow_airflow.hooks.storage import StorageHook
    from rawflow_airflow.settings import sites_path

    quarantine = Quarantine(CatalogueHook(catalogue_conn_id).quarantine_url())
    quarantine.create_schema()
    return Reconciler(
        catalogue,
        StorageHook(storage_conn_id).get_conn(),
        load_sites(sites_path()),
        quarantine,
        SmtpNotifierHook(smtp_conn_id, to=alert_to or _alert_to()).get_conn(),
    )


def reconcile_open_blocks(catalogue_conn_id: str = "rawflow_catalogue") -> dict[str, Any]:
    """Reconcile every open block (and the latest days) with the Tier-0 listing; transient failures of some
    blocks fail the task after the others are done, so Airflow retries it."""
    import logging

    from rawflow.errors import TransientError
    from rawflow.ops.reconcile import blocks_to_reconcile, reconcile_blocks
    from rawflow_airflow.hooks.catalogue import CatalogueHook

    catalogue = CatalogueHook(catalogue_conn_id).get_conn()
    try:
        unit = reconciler(catalogue, catalogue_conn_id=catalogue_conn_id)
        blocks = blocks_to_reconcile(catalogue, timezone=unit.timezone)
        run = reconcile_blocks(unit, blocks)
    finally:
        catalogue.close()
    logging.getLogger(__name__).info("%s", run.summary())
    if run.failed:
        raise TransientError(run.summary())
    return run.to_dict()


def _alert_to() -> list[str]:
    from airflow.sdk import Variable

    value = Variable.get("rawflow_alert_email", default=None)
    return [a.strip() for a in str(value).split(",") if a.strip()] if value else ["shifters@localhost"]


def audit_closed_block(
    catalogue: Catalogue,
    data_type: str,
    block_id: str,
    site_names: list[str],
    *,
    catalogue_conn_id: str = "rawflow_catalogue",
    storage_conn_id: str = "rawflow_storage",
) -> dict[str, Any]:
    """Audit a closed block at each site, store the results and return them per site (for the block report).

    Lost replicas are marked BAD (the next block run, or ``rawflow block audit``'s, transfers them again);
    dark files are only listed. A site that cannot be listed is reported with its error; nothing raises."""
    import logging

    from rawflow.naming import DataType
    from rawflow.ops.audit import AuditStore, audit_block
    from rawflow.sites import load_sites
    from rawflow_airflow.hooks.catalogue import CatalogueHook
    from rawflow_airflow.hooks.storage import StorageHook
    from rawflow_airflow.settings import sites_path

    audits = audit_block(
        catalogue,
        StorageHook(storage_conn_id).get_conn(),
        load_sites(sites_path()),
        DataType.parse(data_type),
        block_id,
        site_names,
    )
    store = AuditStore(CatalogueHook(catalogue_conn_id).quarantine_url())
    try:
        store.save(audits)
    finally:
        store.close()
    log = logging.getLogger(__name__)
    for audit in audits:
        # Counts only: the names are in the report's XCom and the view (task logs stay small).
        log.info(
            "audit %s at %s: %d dark, %d lost (marked bad: %d), %d unchecked%s",
            audit.block,
            audit.site,
            len(audit.dark),
            len(audit.lost),
            audit.marked_bad,
            audit.unchecked,
            f", error: {audit.error}" if audit.error else "",
        )
    return {audit.site: audit.to_dict(limit=20) for audit in audits}
