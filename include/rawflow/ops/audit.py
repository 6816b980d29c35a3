"""Consistency audit of one block at one destination: the site's storage listing against the catalogue.

- **dark**: a file in the site's block directory that the catalogue does not know, or does not expect at
  that site (outside its share). Listed, never deleted here.
- **lost**: a replica the catalogue calls VALIDATED or ARCHIVED that the storage lacks, or whose size there
  differs from the catalogue's. Marked BAD with the reason ``lost: ...``, so the block DAG transfers it again.

Dot-files are transfers still being written and are neither. Names and sizes come from one listing per site
(``Storage.list_sizes``); a site that cannot be listed is an error of its audit and decides nothing.
``unchecked`` stays in the results and the store for their readers; with sizes from the listing it is 0.
Results are kept, one row per block × site (the latest audit), in the ``site_audits`` table of the
monitoring database, for the block report, the view and the CLI.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from rawflow.catalogue.base import Catalogue, ReplicaState, as_utc
from rawflow.catalogue.sql import engine_url, sqlite_pragmas
from rawflow.errors import PermanentError, StorageNotFoundError, TransientError
from rawflow.naming import DataType, block_directory_lfn, block_name
from rawflow.sites import SitesConfig
from rawflow.storage.base import Storage

GOOD = (ReplicaState.VALIDATED, ReplicaState.ARCHIVED)
MAX_LISTED = 200  # findings kept per block × site in the store (the counts are always complete)


@dataclass(slots=True)
class SiteAudit:
    block: str
    site: str
    listed: int = 0  # names in the site's block directory (dot-files included)
    expected: int = 0  # the block's files that belong at this site
    good: int = 0  # replicas the catalogue calls VALIDATED/ARCHIVED
    dark: list[str] = field(default_factory=list)
    lost: dict[str, str] = field(default_factory=dict)  # lfn → reason ("lost: ...")
    unchecked: int = 0  # good replicas not decided (0 since sizes come from the listing; kept for readers)
    marked_bad: int = 0
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    error: str | None = None

    @property
    def consistent(self) -> bool:
        return not self.dark and not self.lost and not self.unchecked and self.error is None

    def to_dict(self, *, limit: int = MAX_LISTED) -> dict[str, Any]:
        return {
            "block": self.block,
            "site": self.site,
            "listed": self.listed,
            "expected": self.expected,
            "good": self.good,
            "dark_count": len(self.dark),
            "lost_count": len(self.lost),
            "unchecked": self.unchecked,
            "marked_bad": self.marked_bad,
            "dark": self.dark[:limit],
            "lost": dict(list(sorted(self.lost.items()))[:limit]),
            "checked_at": self.checked_at.isoformat(),
            "error": self.error,
        }


def audit_site(
    catalogue: Catalogue,
    storage: Storage,
    sites: SitesConfig,
    data_type: DataType,
    block_id: str,
    site_name: str,
    *,
    mark_lost: bool = True,
) -> SiteAudit:
    """Audit one block at one site; lost replicas are marked BAD unless ``mark_lost`` is false.

    Raises :class:`TransientError` if the site's directory cannot be listed (nothing is decided then)."""
    site = sites.for_type(data_type)[site_name]  # with the type's share (ESD keeps fewer files)
    audit = SiteAudit(block=block_name(data_type, block_id), site=site.name)
    directory = block_directory_lfn(data_type, block_id)
    try:
        listing = storage.list_sizes(site.pfn(directory))
    except StorageNotFoundError:
        listing = {}  # nothing ever arrived at this site (or the directory was removed: every replica is lost)
    except PermanentError as exc:
        raise TransientError(f"auditing {audit.block} at {site.name}: cannot list {directory}: {exc}") from exc
    audit.listed = len(listing)
    # Sizes from the listing itself: one request per site, not a stat per replica.
    on_storage = {f"{directory}/{n}": size for n, size in listing.items() if not n.startswith(".")}

    files = {f.lfn: f for f in catalogue.files_in_block(data_type, block_id)}
    replicas = {
        lfn: at[site.name]
        for lfn, at in catalogue.replica_states(block=(data_type, block_id), site=site.name).items()
        if site.name in at
    }
    expected = {lfn for lfn in files if lfn in replicas or site.archive or site.keeps(lfn)}
    audit.expected = len(expected)
    audit.dark = sorted(set(on_storage) - expected)

    good = sorted(lfn for lfn, info in replicas.items() if info.state in GOOD)
    audit.good = len(good)
    for lfn in good:
        if lfn not in on_storage:
            audit.lost[lfn] = f"lost: not on {site.name} at audit {audit.checked_at:%Y-%m-%dT%H:%M:%SZ}"
    for lfn in good:
        if lfn in on_storage and on_storage[lfn] != files[lfn].size:
            audit.lost[lfn] = f"lost: {on_storage[lfn]} bytes at {site.name}, the catalogue has {files[lfn].size}"
    if mark_lost:
        for reason, lfns in _by_reason(audit.lost).items():
            audit.marked_bad += catalogue.set_replica_state(lfns, site.name, ReplicaState.BAD, error=reason)
    return audit


def audit_block(
    catalogue: Catalogue,
    storage: Storage,
    sites: SitesConfig,
    data_type: DataType,
    block_id: str,
    site_names: Sequence[str],
    *,
    mark_lost: bool = True,
) -> list[SiteAudit]:
    """Audit each site; a site that cannot be listed gets an audit with ``error`` set, the others go on."""
    audits = []
    for name in site_names:
        try:
            audits.append(audit_site(catalogue, storage, sites, data_type, block_id, name, mark_lost=mark_lost))
        except TransientError as exc:
            audits.append(SiteAudit(block=block_name(data_type, block_id), site=name, error=str(exc)))
    return audits


def _by_reason(lost: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for lfn, reason in lost.items():
        grouped.setdefault(reason, []).append(lfn)
    return grouped


# --- the store ------------------------------------------------------------------------------------------

metadata = sa.MetaData()

site_audits = sa.Table(
    "site_audits",
    metadata,
    sa.Column("block", sa.String(64), primary_key=True),
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("listed", sa.Integer, nullable=False),
    sa.Column("expected", sa.Integer, nullable=False),
    sa.Column("good", sa.Integer, nullable=False),
    sa.Column("dark_count", sa.Integer, nullable=False),
    sa.Column("lost_count", sa.Integer, nullable=False),
    sa.Column("unchecked", sa.Integer, nullable=False),
    sa.Column("marked_bad", sa.Integer, nullable=False),
    sa.Column("findings", sa.Text, nullable=False),  # JSON: {"dark": [...], "lost": {lfn: reason}}, capped
    sa.Column("error", sa.Text),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
)


class AuditStore:
    """The latest audit of each block × site, in the monitoring database (SQLite or PostgreSQL)."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        if isinstance(url_or_engine, Engine):
            self.engine = url_or_engine
        else:
            self.engine = sa.create_engine(engine_url(url_or_engine), pool_pre_ping=True)
            if self.engine.dialect.name == "sqlite":
                sa.event.listen(self.engine, "connect", sqlite_pragmas)
        with _database_errors():
            metadata.create_all(self.engine, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    def save(self, audits: Sequence[SiteAudit]) -> None:
        rows = []
        for audit in audits:
            out = audit.to_dict()
            rows.append(
                {
                    **{k: out[k] for k in ("block", "site", "listed", "expected", "good", "dark_count")},
                    **{k: out[k] for k in ("lost_count", "unchecked", "marked_bad", "error")},
                    "findings": json.dumps({"dark": out["dark"], "lost": out["lost"]}),
                    "checked_at": audit.checked_at,
                }
            )
        if not rows:
            return
        with _database_errors(), self.engine.begin() as conn:
            for row in rows:
                conn.execute(
                    site_audits.delete().where(site_audits.c.block == row["block"], site_audits.c.site == row["site"])
                )
            conn.execute(site_audits.insert(), rows)

    def latest(self, block: str) -> dict[str, dict[str, Any]]:
        """site → the block's latest audit there (as :meth:`SiteAudit.to_dict` gives it)."""
        with _database_errors(), self.engine.connect() as conn:
            result = conn.execute(sa.select(site_audits).where(site_audits.c.block == block))
            rows = list(result.mappings())
        audits = {}
        for row in rows:
            findings = json.loads(row["findings"])
            audits[row["site"]] = {
                **{k: row[k] for k in ("block", "site", "listed", "expected", "good", "dark_count", "lost_count")},
                **{k: row[k] for k in ("unchecked", "marked_bad", "error")},
                "dark": findings.get("dark", []),
                "lost": findings.get("lost", {}),
                "checked_at": as_utc(row["checked_at"]).isoformat(),
            }
        return audits


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise TransientError(f"monitoring database unavailable: {exc.orig}") from exc
