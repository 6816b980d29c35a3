"""Small task bodies of the block DAG (called from ``@task`` functions in dags/rawflow_block.py)."""

from __future__ import annotations

from typing import Any


def block_targets(
    sites_path: str | None = None,
    only: list[str] | None = None,
    timezone: str | None = None,
    data_type: str | None = None,
) -> list[str]:
    """Every site a block of ``data_type`` goes to (its policy's disk destinations, then the tape archive if the
    type is archived), read at run time.

    ``only`` restricts the run to some of them (a retransfer to one site); an unknown name fails the run.
    ``timezone``: the timetable's receiving-day zone, which must be the site policy's (else days would differ).
    """
    from rawflow.errors import ConfigError
    from rawflow.planning import targets
    from rawflow.sites import load_sites
    from rawflow_airflow.settings import sites_path as configured_sites_path

    sites = load_sites(sites_path or configured_sites_path())
    if timezone is not None and timezone != sites.timezone:
        raise ConfigError(
            sites.source,
            "timezone",
            sites.timezone,
            f"differs from Airflow's [rawflow] receiving_day_timezone {timezone!r}: set both to the same zone",
        )
    names = [site.name for site in targets(sites, data_type=data_type)]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"conf.sites names unknown targets {unknown}; known: {names}")
        names = [n for n in names if n in only]
    return names


def block_target_queues(names: list[str], sites_path: str | None = None) -> list[str]:
    """The Celery queue of each target site, in the same order ("" = the default queue)."""
    from rawflow.sites import load_sites
    from rawflow_airflow.settings import sites_path as configured_sites_path

    sites = load_sites(sites_path or configured_sites_path())
    return [sites.sites[name].queue or "" for name in names]


def block_report(data_type: str, block_id: str, catalogue_conn_id: str = "rawflow_catalogue") -> dict[str, Any]:
    """Assigned / Processed / Problematic per site for the block, as the shifters' transfer monitor shows it."""
    from rawflow import replication
    from rawflow.sites import load_sites
    from rawflow_airflow.hooks.catalogue import CatalogueHook
    from rawflow_airflow.settings import sites_path

    hook = CatalogueHook(catalogue_conn_id)
    catalogue = hook.get_conn()
    audit: dict[str, Any] = {}
    missing: dict[str, Any] | None = None
    try:
        # The type's own targets only (ESD: its policy's sites, no tape).
        status = replication.block_status(catalogue, load_sites(sites_path()), data_type, block_id)
        block = catalogue.get_block(*_key(data_type, block_id))
        if block is not None and not block.is_open:
            from rawflow_airflow.ops_tasks import audit_closed_block

            # The block is complete: compare each site's storage with the catalogue (dark and lost files).
            audit = audit_closed_block(
                catalogue, data_type, block_id, list(status), catalogue_conn_id=catalogue_conn_id
            )
            missing = _missing_from_keepup(catalogue, hook.quarantine_url(), data_type, block_id)
    finally:
        catalogue.close()
    return {
        "block": f"{data_type}-{block_id}",
        "files": block.files if block else 0,
        "bytes": block.bytes if block else 0,
        "closed": bool(block and not block.is_open),
        "sites": {name: progress.to_dict() for name, progress in status.items()},
        "audit": audit,
        **({"missing_from_keepup": missing} if missing is not None else {}),
    }


def _missing_from_keepup(catalogue: Any, jobs_url: str, data_type: str, block_id: str) -> dict[str, Any] | None:
    """For a closed derived block (RTRAW, ESD): the parent files keep-up still owed it when it closed (the
    bounded wait ran out), as a count and the first names; None for RAW."""
    from rawflow.naming import DERIVATION, DataType
    from rawflow.processing.closing import MAX_LISTED, pending_parents
    from rawflow.processing.jobs import JobStore

    kind = DataType.parse(data_type)
    if kind not in DERIVATION:
        return None
    jobs = JobStore(jobs_url)
    try:
        pending = pending_parents(catalogue, jobs, kind, block_id)
    finally:
        jobs.close()
    return {"count": len(pending), "files": dict(sorted(pending.items())[:MAX_LISTED])}


def _key(data_type: str, block_id: str) -> tuple[Any, str]:
    from rawflow.naming import DataType

    return DataType.parse(data_type), block_id


def keepup_blocks(
    triggering_asset_events: Any = None,
    requested: list[str] | None = None,
    catalogue_conn_id: str = "rawflow_catalogue",
    days: int = 3,
) -> list[str]:
    """The RAW blocks a keep-up run works on: ``conf.blocks`` if given, else the blocks whose registrations
    triggered it (``rawflow://blocks/RAW-YYYYMMDD``), else (the periodic catch-up) the last ``days`` days'."""
    from rawflow.processing.keepup import catch_up_blocks
    from rawflow.processing.planning import blocks_from_asset_uris
    from rawflow_airflow.hooks.catalogue import CatalogueHook

    if requested:
        return blocks_from_asset_uris(f"rawflow://blocks/RAW-{b}" for b in requested)
    uris: list[str] = []
    for asset, events in dict(triggering_asset_events or {}).items():
        uris.append(str(getattr(asset, "uri", asset)))
        for event in events or []:
            uris.append(str(getattr(getattr(event, "asset", None), "uri", "")))
    found = blocks_from_asset_uris(uris)
    if found:
        return found
    catalogue = CatalogueHook(catalogue_conn_id).get_conn()
    try:
        return catch_up_blocks(catalogue, days=days)
    finally:
        catalogue.close()
