"""Replica validation: a replica is good when its size and adler32 at the site equal the catalogue's.

The adler32 is the one the storage reports (server side, what sites compute on write) or, with ``read_back``,
one computed here over the replica's bytes, which also catches a file corrupted on disk after the server
cached its checksum. Block progress per site is counted as Assigned / Processed / Problematic.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rawflow.checksum import format_adler32
from rawflow.errors import StorageError, StorageNotFoundError, TransientStorageError
from rawflow.planning import ARCHIVED, BAD, VALIDATED, BlockFile, ReplicaMap, RetryPolicy
from rawflow.sites import Site, SitesConfig
from rawflow.storage.base import Storage

READ_BUFFER = 8 * 1024 * 1024
MISSING = "missing at the site"


@runtime_checkable
class ChunkReader(Protocol):
    """A storage that can stream a file in pieces (so read-back never holds a whole file in memory)."""

    def iter_bytes(self, url: str, buffer: int = READ_BUFFER) -> Iterator[bytes]: ...


def adler32_chunks(chunks: Iterable[bytes | memoryview]) -> str:
    """adler32 of a stream of pieces, as 8 lower-case hex digits: the validation's read-back path."""
    value = 1
    for piece in chunks:
        value = zlib.adler32(piece, value)
    return format_adler32(value)


def read_back_adler32(storage: Storage, url: str, buffer: int = READ_BUFFER) -> str:
    """adler32 over the replica's bytes as read from the site."""
    if isinstance(storage, ChunkReader):
        return adler32_chunks(storage.iter_bytes(url, buffer))
    return adler32_chunks([storage.read_bytes(url)])


@dataclass(frozen=True, slots=True)
class ReplicaCheck:
    lfn: str
    url: str
    ok: bool
    reason: str | None = None
    transient: bool = False  # could not tell (site down): neither good nor bad


def check_replica(storage: Storage, url: str, expected: BlockFile, *, read_back: bool = False) -> ReplicaCheck:
    """Stat + adler32 of one replica against the catalogue's record."""
    lfn = expected.lfn
    try:
        size = storage.stat(url).size
        if size != expected.size:
            return ReplicaCheck(lfn, url, False, f"size {size} at the site, catalogue says {expected.size}")
        found = read_back_adler32(storage, url) if read_back else storage.checksum(url, "adler32")
    except StorageNotFoundError:
        return ReplicaCheck(lfn, url, False, MISSING)
    except TransientStorageError as exc:
        return ReplicaCheck(lfn, url, False, f"site unreachable: {exc}", transient=True)
    except StorageError as exc:
        return ReplicaCheck(lfn, url, False, f"cannot check: {exc}")
    if found != expected.adler32:
        how = "read back" if read_back else "reported by the site"
        return ReplicaCheck(lfn, url, False, f"adler32 {found} {how}, catalogue says {expected.adler32}")
    return ReplicaCheck(lfn, url, True)


def check_replicas(
    storage: Storage, site: Site, files: Sequence[BlockFile], *, read_back: bool = False
) -> list[ReplicaCheck]:
    return [check_replica(storage, site.pfn(f.lfn), f, read_back=read_back) for f in files]


@dataclass(frozen=True, slots=True)
class SiteProgress:
    """One block at one site. Assigned = files the site should hold; Processed = held and checked (archived on
    tape); Problematic = gave up after the retry limit; the rest are pending. ``reasons``: LFN → why, for the
    problematic ones."""

    site: str
    assigned: int
    processed: int
    problematic: int
    reasons: Mapping[str, str] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return self.assigned - self.processed - self.problematic

    @property
    def status(self) -> str:
        if self.problematic:
            return "Problematic"
        if self.processed == self.assigned:
            return "Processed"
        return "Assigned"

    def to_dict(self) -> dict[str, object]:
        return {
            "site": self.site,
            "status": self.status,
            "assigned": self.assigned,
            "processed": self.processed,
            "problematic": self.problematic,
            "pending": self.pending,
            "reasons": dict(self.reasons),
        }


def site_progress(
    site: Site, files: Sequence[BlockFile], replicas: ReplicaMap, retry: RetryPolicy | None = None
) -> SiteProgress:
    retry = retry or RetryPolicy()
    done_states = (ARCHIVED,) if site.archive else (VALIDATED, ARCHIVED)
    assigned = processed = problematic = 0
    reasons: dict[str, str] = {}
    for f in files:
        if not (site.archive or site.keeps(f.lfn)):
            continue
        assigned += 1
        info = replicas.get(f.lfn, {}).get(site.name)
        if info is None:
            continue
        if info.state in done_states:
            processed += 1
        elif info.state == BAD and info.attempts >= retry.max_attempts:
            problematic += 1
            reasons[f.lfn] = f"{info.attempts} attempts: {info.error or 'bad replica'}"
    return SiteProgress(site.name, assigned, processed, problematic, reasons)


def block_progress(
    sites: SitesConfig,
    files: Sequence[BlockFile],
    replicas: ReplicaMap,
    retry: RetryPolicy | None = None,
    *,
    archive: bool = True,
    data_type: str | None = None,
) -> dict[str, SiteProgress]:
    """Assigned / Processed / Problematic for every target site of a block (by ``data_type``'s policy)."""
    if data_type is not None:
        sites = sites.for_type(data_type)
    chosen = [*sites.destinations, *([sites.archive] if archive and sites.to_tape else [])]
    return {site.name: site_progress(site, files, replicas, retry) for site in chosen}
