"""Whole-site checks the block DAG runs around its replication rounds.

``site_reachable``: probe a site before a round, so an outage costs no transfer attempts (a site that is down
is waited for, not counted against the files). ``verify_site``: once a block is closed, check every replica the
catalogue calls good at a site (stat + adler32 against the catalogue); a replica that went bad on disk since it
was validated becomes BAD and is retransferred by the next round.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from rawflow.catalogue.base import Catalogue, ReplicaState
from rawflow.errors import StorageNotFoundError, TransientStorageError
from rawflow.naming import DataType
from rawflow.sites import Site
from rawflow.storage.base import Storage
from rawflow.validation import check_replica


def site_reachable(storage: Storage, site: Site) -> tuple[bool, str | None]:
    """Whether the site's storage answers at all (a missing directory still counts as an answer)."""
    try:
        storage.stat(site.url_prefix.rstrip("/") + "/")
    except StorageNotFoundError:
        return True, None
    except TransientStorageError as exc:
        return False, str(exc)
    return True, None


@dataclass(slots=True)
class VerifyReport:
    site: str
    checked: int = 0
    good: int = 0
    bad: dict[str, str] = field(default_factory=dict)
    unreachable: int = 0


def verify_site(
    catalogue: Catalogue,
    storage: Storage,
    site: Site,
    data_type: DataType,
    block_id: str,
    *,
    parallel: int = 8,
    states: Iterable[ReplicaState] = (ReplicaState.VALIDATED, ReplicaState.ARCHIVED),
    validated_before: datetime | None = None,
) -> VerifyReport:
    """Check every replica at ``site`` of the block whose catalogue state is one of ``states``.

    ``validated_before``: skip replicas whose state changed at or after it (the copy that validated them has
    just checksummed them; a replica is checksummed at its destination once per run)."""
    wanted = set(states)
    replicas = catalogue.replica_states(block=(data_type, block_id), site=site.name)
    lfns = sorted(
        lfn
        for lfn, by_site in replicas.items()
        if site.name in by_site
        and by_site[site.name].state in wanted
        and (validated_before is None or by_site[site.name].updated_at < validated_before)
    )
    records = catalogue.get_files(lfns)
    report = VerifyReport(site=site.name)
    if not lfns:
        return report
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix=f"verify-{site.name}") as pool:
        checks = list(pool.map(lambda lfn: check_replica(storage, site.pfn(lfn), records[lfn]), lfns))
    by_reason: dict[str, list[str]] = defaultdict(list)
    for check in checks:
        report.checked += 1
        if check.ok:
            report.good += 1
        elif check.transient:
            report.unreachable += 1
        else:
            report.bad[check.lfn] = check.reason or "bad replica"
            by_reason[f"verification after close: {check.reason}"].append(check.lfn)
    for reason, bad_lfns in by_reason.items():
        catalogue.set_replica_state(bad_lfns, site.name, ReplicaState.BAD, error=reason)
    return report
