"""Block replication planning: which files go where, from which sources, in how many chunks. Pure functions.

A block is planned per target site. A disk destination gets the files its share keeps, minus those it already
holds validated; the tape archive gets every file of the block. Each file carries its candidate sources (every
disk site holding a validated replica, tier-0 first) so a transfer backend can fall back to the next one. A site
reached through hops (JINR via CNAF) is fed from its last hop once that hop holds a validated replica, or by a
multihop copy when the backend supports it.

Chunks are sized so that a block needs a bounded number of task instances whatever its file count, and each chunk
has a deterministic key (block, site, index, LFNs, attempt): a retried submission reuses the same key.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from rawflow.sites import Site, SitesConfig

VALIDATED = "validated"
ARCHIVED = "archived"
BAD = "bad"

DEFAULT_TASK_BUDGET = 48
DEFAULT_TASKS_PER_CHUNK = 2  # replicate_chunk + validate_chunk (or archive_chunk + validation)
MAX_CHUNKS_PER_SITE = 10
DEFAULT_MIN_CHUNK_FILES = 25
DEFAULT_MAX_ATTEMPTS = 3


class ChunkKind(enum.StrEnum):
    REPLICATE = "replicate"
    ARCHIVE = "archive"


class BlockFile(Protocol):
    """What planning needs to know about a catalogued file (the catalogue's FileRecord fits)."""

    @property
    def lfn(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def adler32(self) -> str: ...


class Replica(Protocol):
    """One replica as the catalogue knows it (the catalogue's ReplicaInfo fits). ``attempts`` counts transfers."""

    @property
    def state(self) -> str: ...

    @property
    def attempts(self) -> int: ...

    @property
    def updated_at(self) -> datetime | None: ...

    @property
    def error(self) -> str | None: ...


ReplicaMap = Mapping[str, Mapping[str, Replica]]
"""lfn → site name → replica."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retransfer of bad replicas with exponential backoff between attempts."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff: timedelta = timedelta(minutes=5)
    max_backoff: timedelta = timedelta(hours=2)

    def delay(self, attempts: int) -> timedelta:
        """Wait before attempt number ``attempts + 1`` (no wait before the first)."""
        if attempts <= 0:
            return timedelta(0)
        delay: timedelta = self.backoff * (2 ** (attempts - 1))
        return min(delay, self.max_backoff)


@dataclass(frozen=True, slots=True)
class ChunkLimits:
    """At most ``max_chunks`` chunks per site, each with at least ``min_chunk_files`` files (bar the last)."""

    max_chunks: int = 6
    min_chunk_files: int = DEFAULT_MIN_CHUNK_FILES

    @classmethod
    def for_budget(
        cls,
        targets: int,
        *,
        task_budget: int = DEFAULT_TASK_BUDGET,
        tasks_per_chunk: int = DEFAULT_TASKS_PER_CHUNK,
        min_chunk_files: int = DEFAULT_MIN_CHUNK_FILES,
    ) -> ChunkLimits:
        """Chunks per site such that ``targets`` sites × chunks × tasks per chunk stays within the budget."""
        per_site = task_budget // max(1, targets * tasks_per_chunk)
        return cls(max_chunks=max(1, min(MAX_CHUNKS_PER_SITE, per_site)), min_chunk_files=max(1, min_chunk_files))


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One file to copy: ``sources`` are site names, preferred first; ``hops`` the sites a multihop copy crosses."""

    lfn: str
    size: int
    adler32: str
    sources: tuple[str, ...]
    hops: tuple[str, ...] = ()
    attempt: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "lfn": self.lfn,
            "size": self.size,
            "adler32": self.adler32,
            "sources": list(self.sources),
            "hops": list(self.hops),
            "attempt": self.attempt,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PlannedFile:
        return cls(
            lfn=str(raw["lfn"]),
            size=int(raw["size"]),
            adler32=str(raw["adler32"]),
            sources=tuple(str(s) for s in raw["sources"]),
            hops=tuple(str(h) for h in raw.get("hops", ())),
            attempt=int(raw.get("attempt", 0)),
        )


@dataclass(frozen=True, slots=True)
class Chunk:
    """A unit of transfer work: some files of one block towards one site. JSON-friendly via to_dict/from_dict."""

    data_type: str
    block_id: str
    site: str
    kind: ChunkKind
    index: int
    files: tuple[PlannedFile, ...]

    @property
    def attempt(self) -> int:
        return max((f.attempt for f in self.files), default=0)

    @property
    def lfns(self) -> list[str]:
        return [f.lfn for f in self.files]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def key(self) -> str:
        return chunk_key(self.data_type, self.block_id, self.site, self.kind, self.index, self.lfns, self.attempt)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_type": self.data_type,
            "block_id": self.block_id,
            "site": self.site,
            "kind": self.kind.value,
            "index": self.index,
            "key": self.key,
            "files": [f.to_dict() for f in self.files],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Chunk:
        chunk = cls(
            data_type=str(raw["data_type"]),
            block_id=str(raw["block_id"]),
            site=str(raw["site"]),
            kind=ChunkKind(raw.get("kind", ChunkKind.REPLICATE.value)),
            index=int(raw["index"]),
            files=tuple(PlannedFile.from_dict(f) for f in raw["files"]),
        )
        if "key" in raw and raw["key"] != chunk.key:
            raise ValueError(f"chunk {raw['key']!r} does not match its content (key {chunk.key!r})")
        return chunk


@dataclass(frozen=True, slots=True)
class SitePlan:
    """The plan for one target site. Counts are files; ``waiting`` and ``problematic`` map LFN to the reason."""

    site: str
    kind: ChunkKind
    assigned: int
    done: int
    chunks: tuple[Chunk, ...]
    waiting: Mapping[str, str] = field(default_factory=dict)
    problematic: Mapping[str, str] = field(default_factory=dict)

    @property
    def planned(self) -> int:
        return sum(len(c.files) for c in self.chunks)


@dataclass(frozen=True, slots=True)
class BlockPlan:
    data_type: str
    block_id: str
    sites: tuple[SitePlan, ...]

    @property
    def chunks(self) -> list[Chunk]:
        return [c for s in self.sites for c in s.chunks]

    def site(self, name: str) -> SitePlan:
        return next(s for s in self.sites if s.site == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_type": self.data_type,
            "block_id": self.block_id,
            "sites": {
                s.site: {
                    "kind": s.kind.value,
                    "assigned": s.assigned,
                    "done": s.done,
                    "planned": s.planned,
                    "waiting": dict(s.waiting),
                    "problematic": dict(s.problematic),
                }
                for s in self.sites
            },
            "chunks": [c.to_dict() for c in self.chunks],
        }


def chunk_key(
    data_type: str, block_id: str, site: str, kind: ChunkKind | str, index: int, lfns: Iterable[str], attempt: int
) -> str:
    """A stable 32-hex-digit key; the same inputs give the same key in every process."""
    kind_value = kind.value if isinstance(kind, ChunkKind) else str(kind)
    digest = hashlib.sha256()
    for part in ("rawflow-chunk-v1", data_type, block_id, site, kind_value, str(index), str(attempt)):
        digest.update(part.encode())
        digest.update(b"\0")
    for lfn in sorted(lfns):
        digest.update(lfn.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:32]


def split_evenly(items: Sequence[PlannedFile], limits: ChunkLimits) -> list[tuple[PlannedFile, ...]]:
    """At most ``limits.max_chunks`` chunks of ``ceil(n / k)`` items, none below the minimum size bar the last."""
    n = len(items)
    if n == 0:
        return []
    wanted = max(1, min(limits.max_chunks, n // limits.min_chunk_files))
    size = math.ceil(n / wanted)
    return [tuple(items[i : i + size]) for i in range(0, n, size)]


def candidate_sources(lfn: str, replicas: ReplicaMap, sites: SitesConfig, *, exclude: str) -> tuple[str, ...]:
    """Disk sites holding a validated replica of ``lfn``: the tier-0 first, then the others by name."""
    holding = replicas.get(lfn, {})
    names = [
        name
        for name, info in holding.items()
        if info.state == VALIDATED and name != exclude and name in sites.sites and sites[name].role == "disk"
    ]
    return tuple(sorted(names, key=lambda n: (not sites[n].tier0, n)))


def _retry_gate(info: Replica | None, retry: RetryPolicy, now: datetime | None) -> tuple[str, str | None, int]:
    """("plan"|"wait"|"problematic", reason, attempt number for the next transfer)."""
    if info is None:
        return "plan", None, 0
    if info.state == BAD and info.attempts >= retry.max_attempts:
        reason = f"{info.attempts} attempts failed (limit {retry.max_attempts})"
        return "problematic", reason + (f": {info.error}" if info.error else ""), info.attempts
    if info.state == BAD and now is not None and info.updated_at is not None:
        ready_at = info.updated_at + retry.delay(info.attempts)
        if now < ready_at:
            return "wait", f"retry backoff until {ready_at.isoformat()}", info.attempts
    return "plan", None, info.attempts


def plan_site(
    files: Sequence[BlockFile],
    site: Site,
    sites: SitesConfig,
    replicas: ReplicaMap,
    *,
    data_type: str,
    block_id: str,
    limits: ChunkLimits | None = None,
    retry: RetryPolicy | None = None,
    multihop: bool = False,
    now: datetime | None = None,
) -> SitePlan:
    """Plan one target site (a disk destination or the tape archive) for one block."""
    limits = limits or ChunkLimits()
    retry = retry or RetryPolicy()
    kind = ChunkKind.ARCHIVE if site.archive else ChunkKind.REPLICATE
    finished = (ARCHIVED, VALIDATED)
    assigned = sorted((f for f in files if site.archive or site.keeps(f.lfn)), key=lambda f: f.lfn)
    route = sites.route_to(site.name)
    hops = tuple(h.name for h in route[:-1])
    done = 0
    todo: list[PlannedFile] = []
    waiting: dict[str, str] = {}
    problematic: dict[str, str] = {}
    for f in assigned:
        here = replicas.get(f.lfn, {}).get(site.name)
        if here is not None and here.state in finished:
            done += 1
            continue
        verdict, reason, attempt = _retry_gate(here, retry, now)
        if verdict == "problematic":
            problematic[f.lfn] = reason or "too many attempts"
            continue
        if verdict == "wait":
            waiting[f.lfn] = reason or "waiting"
            continue
        sources = candidate_sources(f.lfn, replicas, sites, exclude=site.name)
        if hops:
            last_hop = hops[-1]
            if last_hop in sources:
                todo.append(PlannedFile(f.lfn, f.size, f.adler32, (last_hop,), (), attempt))
            elif multihop and sources:
                todo.append(PlannedFile(f.lfn, f.size, f.adler32, sources, hops, attempt))
            else:
                waiting[f.lfn] = f"hop {last_hop} holds no validated replica yet"
            continue
        if not sources:
            waiting[f.lfn] = "no site holds a validated replica"
            continue
        todo.append(PlannedFile(f.lfn, f.size, f.adler32, sources, (), attempt))
    chunks = tuple(
        Chunk(data_type=data_type, block_id=block_id, site=site.name, kind=kind, index=i, files=part)
        for i, part in enumerate(split_evenly(todo, limits))
    )
    return SitePlan(
        site=site.name,
        kind=kind,
        assigned=len(assigned),
        done=done,
        chunks=chunks,
        waiting=waiting,
        problematic=problematic,
    )


def targets(sites: SitesConfig, *, archive: bool = True, data_type: str | None = None) -> list[Site]:
    """Every site a block goes to: the disk destinations, then the tape archive (unless the type is not
    archived). ``data_type`` (or a :meth:`SitesConfig.for_type` view) applies that type's policy: its shares,
    each site with its share for the type, and whether it goes to tape."""
    if data_type is not None:
        sites = sites.for_type(data_type)
    chosen = list(sites.destinations)
    if archive and sites.to_tape:
        chosen.append(sites.archive)
    return chosen


def plan_block(
    files: Sequence[BlockFile],
    sites: SitesConfig,
    replicas: ReplicaMap,
    *,
    data_type: str,
    block_id: str,
    only: Iterable[str] | None = None,
    archive: bool = True,
    limits: ChunkLimits | None = None,
    retry: RetryPolicy | None = None,
    multihop: bool = False,
    now: datetime | None = None,
) -> BlockPlan:
    """Plan every target site (or only the named ones) for one block, by ``data_type``'s policy."""
    sites = sites.for_type(data_type)
    chosen = targets(sites, archive=archive)
    if only is not None:
        wanted = set(only)
        chosen = [s for s in chosen if s.name in wanted]
    limits = limits or ChunkLimits.for_budget(len(targets(sites, archive=archive)))
    plans = tuple(
        plan_site(
            files,
            site,
            sites,
            replicas,
            data_type=data_type,
            block_id=block_id,
            limits=limits,
            retry=retry,
            multihop=multihop,
            now=now,
        )
        for site in chosen
    )
    return BlockPlan(data_type=data_type, block_id=block_id, sites=plans)
