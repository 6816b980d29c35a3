"""What a block run would transfer now, per site, without moving anything (``rawflow block plan``).

The figures come from the same planner the block round runs (:func:`rawflow.replication.plan_block`, with the
same retry policy), so a run started now copies exactly the planned files, unless the catalogue changes first.
A site reached through a hop (JINR via CNAF) gets in the same run the files its hop is about to receive: those
are counted for it as "after hop", with the hop as their source.

The expected duration uses the rate recently measured at the site: the bytes of the replicas it validated in
the last hours (this block and the previous receiving day's) over the time their validations spanned. With
fewer than two such replicas there is no measurement and no estimate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rawflow import replication
from rawflow.catalogue.base import Catalogue, ReplicaState, utc_now
from rawflow.naming import DataType, block_id_for, block_name, parse_block_id
from rawflow.planning import BlockPlan, RetryPolicy, SitePlan
from rawflow.sites import SitesConfig

RATE_WINDOW = timedelta(hours=6)
_DONE = (ReplicaState.VALIDATED, ReplicaState.ARCHIVED)


@dataclass(frozen=True, slots=True)
class MeasuredRate:
    """Bytes per second the site validated recently, and what the figure is based on."""

    bytes_per_second: float
    replicas: int
    first: datetime
    last: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes_per_second": round(self.bytes_per_second, 1),
            "replicas": self.replicas,
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class SiteDryRun:
    site: str
    kind: str  # "replicate" (disk destination) or "archive" (tape)
    route: tuple[str, ...]  # hops, then the site
    assigned: int  # files of the block the site should hold
    done: int  # already validated (disk) or archived (tape)
    now_files: int  # copied as soon as the run starts
    now_bytes: int
    after_hop_files: int  # copied in the same run once the hop holds them
    after_hop_bytes: int
    sources: Mapping[str, int]  # first-choice source site → files
    waiting: Mapping[str, str] = field(default_factory=dict)  # not copied by a run now: LFN → why
    problematic: Mapping[str, str] = field(default_factory=dict)  # out of retries: LFN → why
    rate: MeasuredRate | None = None
    expected_seconds: float | None = None

    @property
    def files(self) -> int:
        return self.now_files + self.after_hop_files

    @property
    def bytes(self) -> int:
        return self.now_bytes + self.after_hop_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "route": list(self.route),
            "assigned": self.assigned,
            "done": self.done,
            "files": self.files,
            "bytes": self.bytes,
            "now": {"files": self.now_files, "bytes": self.now_bytes},
            "after_hop": {"files": self.after_hop_files, "bytes": self.after_hop_bytes},
            "sources": dict(self.sources),
            "waiting": dict(self.waiting),
            "problematic": dict(self.problematic),
            "rate": self.rate.to_dict() if self.rate else None,
            "expected_seconds": None if self.expected_seconds is None else round(self.expected_seconds, 1),
        }


@dataclass(frozen=True, slots=True)
class BlockDryRun:
    block: str
    is_open: bool
    files: int
    bytes: int
    as_of: datetime
    retry: RetryPolicy
    sites: tuple[SiteDryRun, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "block": self.block,
            "open": self.is_open,
            "files": self.files,
            "bytes": self.bytes,
            "as_of": self.as_of.isoformat(),
            "retry": {"max_attempts": self.retry.max_attempts, "backoff_seconds": self.retry.backoff.total_seconds()},
            "sites": {s.site: s.to_dict() for s in self.sites},
        }


def plan_now(
    catalogue: Catalogue,
    sites: SitesConfig,
    data_type: DataType | str,
    block_id: str,
    *,
    only: Iterable[str] | None = None,
    retry: RetryPolicy | None = None,
    multihop: bool = False,
    now: datetime | None = None,
) -> BlockDryRun | None:
    """The dry run of ``block_id`` (None if the block is not in the catalogue). Reads the catalogue only."""
    kind = DataType.parse(data_type)
    now = now or utc_now()
    retry = retry or RetryPolicy()
    block = catalogue.get_block(kind, block_id)
    if block is None:
        return None
    # Every target is planned (a hop's plan decides what its routed sites get), then the wanted ones are shown.
    plan = replication.plan_block(catalogue, sites, kind, block_id, multihop=multihop, retry=retry, now=now)
    sizes = {f.lfn: f.size for f in catalogue.files_in_block(kind, block_id)}
    wanted = set(only) if only is not None else None
    result = []
    for site_plan in plan.sites:
        if wanted is not None and site_plan.site not in wanted:
            continue
        rate = measured_rate(catalogue, kind, block_id, site_plan.site, sizes, sites.timezone, now)
        result.append(_site_dry_run(site_plan, plan, sites, sizes, rate))
    with_hops = _add_hop_time({s.site: s for s in result}, plan, sites, sizes, catalogue, kind, block_id, now)
    return BlockDryRun(
        block=block_name(kind, block_id),
        is_open=block.is_open,
        files=block.files,
        bytes=block.bytes,
        as_of=now,
        retry=retry,
        sites=tuple(with_hops[s.site] for s in result),
    )


def _site_dry_run(
    site_plan: SitePlan,
    plan: BlockPlan,
    sites: SitesConfig,
    sizes: Mapping[str, int],
    rate: MeasuredRate | None,
) -> SiteDryRun:
    route = tuple(h.name for h in sites.route_to(site_plan.site))
    planned = [f for chunk in site_plan.chunks for f in chunk.files]
    sources: Counter[str] = Counter(f.sources[0] for f in planned if f.sources)
    waiting = dict(site_plan.waiting)
    after_hop: list[str] = []
    if len(route) > 1:
        hop = route[-2]
        hop_files = {lfn for chunk in plan.site(hop).chunks for lfn in chunk.lfns} if _planned(plan, hop) else set()
        for lfn in list(waiting):
            if lfn in hop_files:
                after_hop.append(lfn)
                del waiting[lfn]
        if after_hop:
            sources[hop] += len(after_hop)
    now_bytes = sum(f.size for f in planned)
    after_bytes = sum(sizes.get(lfn, 0) for lfn in after_hop)
    expected = (now_bytes + after_bytes) / rate.bytes_per_second if rate and rate.bytes_per_second > 0 else None
    if not planned and not after_hop:
        expected = 0.0
    return SiteDryRun(
        site=site_plan.site,
        kind=site_plan.kind.value,
        route=route,
        assigned=site_plan.assigned,
        done=site_plan.done,
        now_files=len(planned),
        now_bytes=now_bytes,
        after_hop_files=len(after_hop),
        after_hop_bytes=after_bytes,
        sources=dict(sorted(sources.items())),
        waiting=waiting,
        problematic=dict(site_plan.problematic),
        rate=rate,
        expected_seconds=expected,
    )


def _planned(plan: BlockPlan, name: str) -> bool:
    return any(s.site == name for s in plan.sites)


def _add_hop_time(
    shown: Mapping[str, SiteDryRun],
    plan: BlockPlan,
    sites: SitesConfig,
    sizes: Mapping[str, int],
    catalogue: Catalogue,
    kind: DataType,
    block_id: str,
    now: datetime,
) -> dict[str, SiteDryRun]:
    """A routed site's files arrive after its hop's copy: its expected time includes the hop's."""
    from dataclasses import replace

    result = dict(shown)
    for name, dry in shown.items():
        if dry.after_hop_files == 0 or dry.expected_seconds is None:
            continue
        hop = dry.route[-2]
        hop_dry = shown.get(hop)
        if hop_dry is None:
            rate = measured_rate(catalogue, kind, block_id, hop, sizes, sites.timezone, now)
            hop_dry = _site_dry_run(plan.site(hop), plan, sites, sizes, rate)
        if hop_dry.expected_seconds is None:
            result[name] = replace(dry, expected_seconds=None)
        else:
            result[name] = replace(dry, expected_seconds=dry.expected_seconds + hop_dry.expected_seconds)
    return result


def measured_rate(
    catalogue: Catalogue,
    data_type: DataType,
    block_id: str,
    site: str,
    sizes: Mapping[str, int],
    timezone: str,
    now: datetime,
    window: timedelta = RATE_WINDOW,
) -> MeasuredRate | None:
    """Bytes/s of the replicas ``site`` validated (or archived) within ``window`` before ``now``.

    Looks at this block and the previous receiving day's (the day boundary does not reset the measurement).
    """
    previous = block_id_for(parse_block_id(block_id) - timedelta(days=1))
    stamps: list[tuple[datetime, int]] = []
    for day in (previous, block_id):
        states = catalogue.replica_states(block=(data_type, day), site=site)
        day_sizes = sizes if day == block_id else {f.lfn: f.size for f in catalogue.files_in_block(data_type, day)}
        for lfn, at_site in states.items():
            info = at_site.get(site)
            if info is not None and info.state in _DONE and now - window <= info.updated_at <= now:
                stamps.append((info.updated_at, day_sizes.get(lfn, 0)))
    if len(stamps) < 2:
        return None
    stamps.sort()
    first, last = stamps[0][0], stamps[-1][0]
    span = (last - first).total_seconds()
    if span < 1:
        return None
    # The first replica's own transfer started before its validation: count the bytes after it.
    moved = sum(size for _, size in stamps[1:])
    return MeasuredRate(bytes_per_second=moved / span, replicas=len(stamps), first=first, last=last)
