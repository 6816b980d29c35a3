"""Block replication planning: shares, sources, hops, chunking, keys, bounded retries."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest

from rawflow.catalogue import ReplicaInfo as CatalogueReplica
from rawflow.catalogue import ReplicaState
from rawflow.naming import DataType, RawFileName, lfn_for
from rawflow.planning import (
    ChunkKind,
    ChunkLimits,
    PlannedFile,
    RetryPolicy,
    chunk_key,
    plan_block,
    plan_site,
    split_evenly,
)
from rawflow.sites import load_sites

BLOCK = "20251101"
T0, CNAF, JINR, IN2P3, TAPE = "IHEP-EOS", "CNAF-STORM", "JINR-EOS", "IN2P3-DCACHE", "IHEP-TAPE"


@dataclass(frozen=True)
class File:
    lfn: str
    size: int
    adler32: str


@pytest.fixture(scope="module")
def sites():  # type: ignore[no-untyped-def]
    from rawflow.sites import default_sites_path

    return load_sites(default_sites_path())


def replica(
    state: str, attempts: int = 0, updated_at: datetime | None = None, error: str | None = None
) -> CatalogueReplica:
    """A catalogue replica record as the catalogue returns it."""
    return CatalogueReplica(ReplicaState(state), error, updated_at or datetime(2025, 11, 1, tzinfo=UTC), attempts)


def block_files(n: int) -> list[File]:
    files = []
    for i in range(n):
        name = RawFileName.build(
            daq="Daq",
            run_number=1000 + i // 100,
            stream_type="Phy",
            stream_name="Main",
            file_tag="T",
            file_time=datetime(2025, 11, 1, 0, 0, 0) + timedelta(seconds=i),
            file_sequence=i,
        ).name
        files.append(File(lfn_for(DataType.RAW, date(2025, 11, 1), name), 1000 + i, f"{i:08x}"))
    return files


def at_tier0(files: list[File]) -> dict[str, dict[str, CatalogueReplica]]:
    return {f.lfn: {T0: replica("validated")} for f in files}


def test_partial_share_plans_exactly_the_files_the_site_keeps(sites) -> None:  # type: ignore[no-untyped-def]
    files = block_files(600)
    plan = plan_site(files, sites[IN2P3], sites, at_tier0(files), data_type="RAW", block_id=BLOCK)
    kept = {f.lfn for f in files if sites[IN2P3].keeps(f.lfn)}
    planned = {p.lfn for c in plan.chunks for p in c.files}
    assert planned == kept
    assert plan.assigned == len(kept)
    assert 170 <= len(kept) <= 230  # a third of 600, give or take the hash's spread


def test_full_share_plans_every_file_and_skips_validated_ones(sites) -> None:  # type: ignore[no-untyped-def]
    files = block_files(100)
    replicas = at_tier0(files)
    for f in files[:40]:
        replicas[f.lfn][CNAF] = replica("validated")
    for f in files[40:50]:
        replicas[f.lfn][CNAF] = replica("copying")
    plan = plan_site(files, sites[CNAF], sites, replicas, data_type="RAW", block_id=BLOCK)
    planned = sorted(p.lfn for c in plan.chunks for p in c.files)
    assert planned == sorted(f.lfn for f in files[40:])
    assert (plan.assigned, plan.done, plan.planned) == (100, 40, 60)


def test_sources_are_validated_disk_replicas_tier0_first(sites) -> None:  # type: ignore[no-untyped-def]
    files = block_files(3)
    replicas = {
        files[0].lfn: {IN2P3: replica("validated"), T0: replica("validated"), TAPE: replica("archived")},
        files[1].lfn: {T0: replica("bad"), IN2P3: replica("validated")},
        files[2].lfn: {T0: replica("registered")},
    }
    plan = plan_site(files, sites[CNAF], sites, replicas, data_type="RAW", block_id=BLOCK)
    by_lfn = {p.lfn: p for c in plan.chunks for p in c.files}
    assert by_lfn[files[0].lfn].sources == (T0, IN2P3)
    assert by_lfn[files[1].lfn].sources == (IN2P3,)
    assert files[2].lfn not in by_lfn
    assert plan.waiting[files[2].lfn] == "no site holds a validated replica"


def test_routed_site_waits_for_its_hop_then_copies_from_it(sites) -> None:  # type: ignore[no-untyped-def]
    files = block_files(4)
    replicas = at_tier0(files)
    replicas[files[0].lfn][CNAF] = replica("validated")
    plan = plan_site(files, sites[JINR], sites, replicas, data_type="RAW", block_id=BLOCK)
    planned = [p for c in plan.chunks for p in c.files]
    assert [(p.lfn, p.sources, p.hops) for p in planned] == [(files[0].lfn, (CNAF,), ())]
    assert set(plan.waiting) == {f.lfn for f in files[1:]}
    assert all("CNAF-STORM" in reason for reason in plan.waiting.values())


def test_routed_site_with_multihop_goes_through_the_hop_in_one_job(sites) -> None:  # type: ignore[no-untyped-def]
    files = block_files(4)
    replicas = at_tier0(files)
    replicas[files[0].lfn][CNAF] = replica("validated")
    plan = plan_site(files, sites[JINR], sites, replicas, data_type="RAW", block_id=BLOCK, multihop=True)
    by_lfn = {p.lfn: p for c in plan.chunks for p in c.files}
    assert by_lfn[files[0].lfn].hops == ()
    assert all(by_lfn[f.lfn].hops == (CNAF,) and by_lfn[f.lfn].sources == (T0,) for f in files[1:])
    assert not plan.waiting


def test_archive_takes_every_file_and_counts_archived_as_done(sites) -> None:  # type: ignore[no-untyped-def]
    files = block_files(30)
    replicas = at_tier0(files)
    replicas[files[0].lfn][TAPE] = replica("archived")
    replicas[files[1].lfn][TAPE] = replica("validated")  # on the tape buffer, migration pending
    plan = plan_site(files, sites[TAPE], sites, replicas, data_type="RAW", block_id=BLOCK)
    assert plan.kind is ChunkKind.ARCHIVE
    assert (plan.assigned, plan.done, plan.planned) == (30, 2, 28)
    assert all(c.kind is ChunkKind.ARCHIVE for c in plan.chunks)


@pytest.mark.parametrize("n", [0, 1, 24, 25, 26, 199, 1000, 14_400])
def test_chunks_are_even_bounded_and_cover_everything(n: int) -> None:
    limits = ChunkLimits(max_chunks=6, min_chunk_files=25)
    items = [PlannedFile(f"/juno/raw/x/{i:06d}", 1, "00000001", ("A",)) for i in range(n)]
    parts = split_evenly(items, limits)
    assert [p for part in parts for p in part] == items
    assert len(parts) <= 6
    if n:
        size = math.ceil(n / len(parts))
        assert all(len(p) == size for p in parts[:-1])
        assert len(parts) == 1 or size >= 25


def test_a_whole_block_stays_within_the_task_budget(sites) -> None:  # type: ignore[no-untyped-def]
    files = block_files(14_400)
    plan = plan_block(files, sites, at_tier0(files), data_type="RAW", block_id=BLOCK, multihop=True)
    task_instances = 2 * len(plan.chunks)
    assert task_instances <= 50
    assert {s.site for s in plan.sites} == {CNAF, JINR, IN2P3, TAPE}
    assert plan.site(CNAF).planned == plan.site(JINR).planned == plan.site(TAPE).planned == 14_400
    assert all(len(c.files) >= 25 for c in plan.chunks)


def test_chunk_keys_are_deterministic_and_change_with_the_attempt(sites) -> None:  # type: ignore[no-untyped-def]
    files = block_files(60)
    first = plan_site(files, sites[CNAF], sites, at_tier0(files), data_type="RAW", block_id=BLOCK)
    again = plan_site(list(reversed(files)), sites[CNAF], sites, at_tier0(files), data_type="RAW", block_id=BLOCK)
    assert [c.key for c in first.chunks] == [c.key for c in again.chunks]
    assert len({c.key for c in first.chunks}) == len(first.chunks)
    lfns = first.chunks[0].lfns
    key0 = chunk_key("RAW", BLOCK, CNAF, ChunkKind.REPLICATE, 0, lfns, 0)
    assert key0 == first.chunks[0].key
    assert chunk_key("RAW", BLOCK, CNAF, ChunkKind.REPLICATE, 0, lfns, 1) != key0
    assert chunk_key("RAW", BLOCK, JINR, ChunkKind.REPLICATE, 0, lfns, 0) != key0
    assert chunk_key("RAW", BLOCK, CNAF, ChunkKind.REPLICATE, 0, lfns[:-1], 0) != key0


def test_chunks_survive_a_json_round_trip_and_reject_tampering(sites) -> None:  # type: ignore[no-untyped-def]
    files = block_files(10)
    plan = plan_block(files, sites, at_tier0(files), data_type="RAW", block_id=BLOCK)
    raw = json.loads(json.dumps(plan.to_dict()))
    chunks = [type(plan.chunks[0]).from_dict(c) for c in raw["chunks"]]
    assert chunks == plan.chunks
    raw["chunks"][0]["files"].pop()
    with pytest.raises(ValueError, match="does not match"):
        type(plan.chunks[0]).from_dict(raw["chunks"][0])


def test_bad_replicas_are_retried_with_backoff_then_problematic(sites) -> None:  # type: ignore[no-untyped-def]
    files = block_files(3)
    now = datetime(2025, 11, 2, 12, 0, 0, tzinfo=UTC)
    retry = RetryPolicy(max_attempts=3, backoff=timedelta(minutes=5))
    replicas = at_tier0(files)
    replicas[files[0].lfn][CNAF] = replica("bad", attempts=1, updated_at=now - timedelta(minutes=6))
    replicas[files[1].lfn][CNAF] = replica("bad", attempts=2, updated_at=now - timedelta(minutes=6))
    replicas[files[2].lfn][CNAF] = replica("bad", attempts=3, updated_at=now - timedelta(hours=5), error="boom")
    plan = plan_site(files, sites[CNAF], sites, replicas, data_type="RAW", block_id=BLOCK, retry=retry, now=now)
    planned = {p.lfn: p.attempt for c in plan.chunks for p in c.files}
    assert planned == {files[0].lfn: 1}  # 5 min backoff after one attempt has passed
    assert "backoff" in plan.waiting[files[1].lfn]  # 10 min backoff after two attempts has not
    assert plan.problematic[files[2].lfn] == "3 attempts failed (limit 3): boom"
    assert plan.chunks[0].attempt == 1
    assert retry.delay(0) == timedelta(0) and retry.delay(3) == timedelta(minutes=20)
