"""Block replication end to end on the real loopback xrootd sites, a Postgres catalogue and real gfal2:
shares, routes, validation, archive, a site outage, a corrupted replica, bounded retries, idempotent re-runs."""

from __future__ import annotations

import os
import random
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from rawflow import replication
from rawflow.catalogue import Catalogue, FileRecord, ReplicaState, get_catalogue
from rawflow.errors import TransientStorageError
from rawflow.grid.xrootd import LocalSites
from rawflow.naming import DataType, RawFileName, block_id_for, lfn_for
from rawflow.planning import BlockPlan, ChunkLimits, RetryPolicy
from rawflow.sites import SitesConfig
from rawflow.storage.gfal2_storage import Gfal2Storage
from rawflow.testing.fts3_double import Fts3Double
from rawflow.transfer import get_transfertool
from rawflow.transfer.engine import StorageSpec
from rawflow.transfer.gfal2_tool import Gfal2Transfertool

T0, TAPE, CNAF, JINR, IN2P3 = "IHEP-EOS", "IHEP-TAPE", "CNAF-STORM", "JINR-EOS", "IN2P3-DCACHE"
NO_BACKOFF = RetryPolicy(max_attempts=3, backoff=timedelta(0))
SMALL_CHUNKS = ChunkLimits(max_chunks=3, min_chunk_files=4)


@dataclass
class Block:
    data_type: DataType
    block_id: str
    files: list[FileRecord]
    contents: dict[str, bytes]


@pytest.fixture(scope="module")
def catalogue(new_pg_database: Callable[[str], str]) -> Iterator[Catalogue]:
    made = get_catalogue(new_pg_database("rawflow_replication"))
    yield made
    made.close()


@pytest.fixture
def tool(storage_spec: StorageSpec) -> Gfal2Transfertool:
    return Gfal2Transfertool(storage_spec)


def new_block(catalogue: Catalogue, storage: Gfal2Storage, sites: SitesConfig, count: int, size: int = 16384) -> Block:
    """``count`` raw files of a day of their own, written to the tier-0 and registered VALIDATED there."""
    rng = random.Random()
    day = date(2040, 1, 1) + timedelta(days=rng.randrange(20000))
    run = rng.randrange(1, 999999)
    files: list[FileRecord] = []
    contents: dict[str, bytes] = {}
    for i in range(count):
        name = RawFileName.build(
            daq="Daq",
            run_number=run,
            stream_type="Phy",
            stream_name="Main",
            file_tag="T",
            file_time=datetime(day.year, day.month, day.day, 1, 0, 0) + timedelta(seconds=i),
            file_sequence=i,
        ).name
        lfn = lfn_for(DataType.RAW, day, name)
        data = os.urandom(size + i)
        storage.put_bytes(sites.tier0.pfn(lfn), data)
        contents[lfn] = data
        files.append(
            FileRecord(
                lfn=lfn,
                size=len(data),
                adler32=f"{zlib.adler32(data) & 0xFFFFFFFF:08x}",
                data_type=DataType.RAW,
                block_id=block_id_for(day),
                run_number=run,
                stream="Main",
                received_at=datetime.now(UTC),
            )
        )
    catalogue.register_files(files, site=sites.tier0.name, state=ReplicaState.VALIDATED)
    return Block(DataType.RAW, block_id_for(day), files, contents)


def states_at(catalogue: Catalogue, block: Block, site: str) -> dict[str, ReplicaState | None]:
    replicas = catalogue.replica_states(block=(block.data_type, block.block_id))
    found: dict[str, ReplicaState | None] = {}
    for f in block.files:
        info = replicas.get(f.lfn, {}).get(site)
        found[f.lfn] = info.state if info is not None else None
    return found


def on_disk(local_sites: LocalSites, site: str, lfn: str) -> Path:
    """The replica's file under the site's oss.localroot."""
    layout = local_sites.layouts[site]
    url_path = layout.export.rstrip("/") + lfn
    return layout.data_dir / url_path.lstrip("/")


def run_round(
    catalogue: Catalogue, sites: SitesConfig, tool: Gfal2Transfertool, storage: Gfal2Storage, plan: BlockPlan
) -> list[replication.ChunkResult]:
    results = [
        replication.replicate_chunk(chunk, catalogue=catalogue, sites=sites, transfertool=tool, storage=storage)
        for chunk in plan.chunks
    ]
    for chunk in plan.chunks:
        replication.validate_chunk(chunk, catalogue=catalogue, sites=sites, storage=storage)
    return results


def wait_reachable(storage: Gfal2Storage, url: str, timeout: float = 30.0) -> None:
    """After a restart the client keeps a refused connection in mind for a few seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            storage.stat(url)
            return
        except TransientStorageError:
            assert time.monotonic() < deadline, f"{url} still unreachable after {timeout} s"
            time.sleep(0.5)


@dataclass
class Replicated:
    block: Block
    first_plan: BlockPlan
    second_plan: BlockPlan
    results: list[replication.ChunkResult]


@pytest.fixture(scope="module")
def replicated(
    catalogue: Catalogue, storage: Gfal2Storage, local_sites: LocalSites, storage_spec: StorageSpec
) -> Replicated:
    """A 30-file block taken through two rounds: the direct sites and the archive, then JINR via CNAF."""
    sites = local_sites.sites_config
    tool = Gfal2Transfertool(storage_spec)
    block = new_block(catalogue, storage, sites, 30)
    plan = lambda: replication.plan_block(  # noqa: E731
        catalogue, sites, block.data_type, block.block_id, limits=SMALL_CHUNKS, retry=NO_BACKOFF
    )
    first = plan()
    results = run_round(catalogue, sites, tool, storage, first)
    second = plan()
    results += run_round(catalogue, sites, tool, storage, second)
    return Replicated(block, first, second, results)


def test_files_land_where_the_shares_say(
    replicated: Replicated, catalogue: Catalogue, storage: Gfal2Storage, local_sites: LocalSites
) -> None:
    sites = local_sites.sites_config
    block = replicated.block
    kept_by_in2p3 = {f.lfn for f in block.files if sites[IN2P3].keeps(f.lfn)}
    assert 0 < len(kept_by_in2p3) < len(block.files)
    for site in (CNAF, JINR, IN2P3):
        states = states_at(catalogue, block, site)
        for f in block.files:
            url = sites[site].pfn(f.lfn)
            if site != IN2P3 or f.lfn in kept_by_in2p3:
                assert states[f.lfn] is ReplicaState.VALIDATED, (site, f.lfn)
                assert storage.checksum(url) == f.adler32
                assert storage.stat(url).size == f.size
            else:
                assert states[f.lfn] is None
                assert not storage.exists(url)
    assert sum(r.bytes for r in replicated.results if r.site == IN2P3) == sum(
        f.size for f in block.files if f.lfn in kept_by_in2p3
    )


def test_chunks_stay_small_and_jinr_is_fed_from_cnaf_once_cnaf_holds_the_files(replicated: Replicated) -> None:
    first, second = replicated.first_plan, replicated.second_plan
    assert len(first.site(CNAF).chunks) == 3
    assert all(len(c.files) == 10 for c in first.site(CNAF).chunks)
    assert not first.site(JINR).chunks
    assert len(first.site(JINR).waiting) == 30
    assert {c.site for c in second.chunks} == {JINR}
    assert all(f.sources == (CNAF,) and not f.hops for c in second.chunks for f in c.files)
    assert sum(len(c.files) for c in first.site(TAPE).chunks) == 30
    assert all(f.sources == (T0,) for c in first.site(IN2P3).chunks for f in c.files)


def test_archive_counts_only_what_the_tape_reports(
    replicated: Replicated, catalogue: Catalogue, storage: Gfal2Storage, local_sites: LocalSites
) -> None:
    sites = local_sites.sites_config
    block = replicated.block
    before = replication.block_status(catalogue, sites, block.data_type, block.block_id)
    assert before[TAPE].processed == 0 and before[TAPE].status == "Assigned"
    assert set(states_at(catalogue, block, TAPE).values()) == {ReplicaState.VALIDATED}

    if local_sites.migrator is None or not local_sites.migrator.alive():  # nobody migrates behind our back
        waiting = replication.poll_archive(
            catalogue=catalogue, sites=sites, storage=storage, data_type=block.data_type, block_id=block.block_id
        )
        assert not waiting.done and len(waiting.pending) == 30 and not waiting.archived
        migrated = local_sites.migrate_tape()
        assert all(any(m.endswith(f.lfn) for m in migrated) for f in block.files)
    polled = replication.poll_archive(
        catalogue=catalogue, sites=sites, storage=storage, data_type=block.data_type, block_id=block.block_id
    )
    assert polled.done and sorted(polled.archived) == sorted(f.lfn for f in block.files)
    assert set(states_at(catalogue, block, TAPE).values()) == {ReplicaState.ARCHIVED}
    after = replication.block_status(catalogue, sites, block.data_type, block.block_id)
    assert {name: p.status for name, p in after.items()} == dict.fromkeys((CNAF, JINR, IN2P3, TAPE), "Processed")
    assert after[IN2P3].assigned == sum(sites[IN2P3].keeps(f.lfn) for f in block.files)


def test_rerunning_a_finished_chunk_moves_zero_bytes(
    replicated: Replicated,
    catalogue: Catalogue,
    storage: Gfal2Storage,
    local_sites: LocalSites,
    tool: Gfal2Transfertool,
) -> None:
    sites = local_sites.sites_config
    block = replicated.block
    for chunk in replicated.first_plan.site(IN2P3).chunks + replicated.first_plan.site(CNAF).chunks:
        again = replication.replicate_chunk(
            chunk.to_dict(), catalogue=catalogue, sites=sites, transfertool=tool, storage=storage
        )
        assert (again.copied, again.bytes, dict(again.failed)) == (0, 0, {})
        assert again.skipped == len(chunk.files)
    fresh = replication.plan_block(catalogue, sites, block.data_type, block.block_id, archive=False)
    assert fresh.chunks == []


def test_a_site_down_mid_run_leaves_the_others_complete_and_catches_up_after_restart(
    catalogue: Catalogue, storage: Gfal2Storage, local_sites: LocalSites, tool: Gfal2Transfertool
) -> None:
    sites = local_sites.sites_config
    block = new_block(catalogue, storage, sites, 12)
    only = [CNAF, IN2P3]
    plan = replication.plan_block(catalogue, sites, block.data_type, block.block_id, only=only, retry=NO_BACKOFF)
    assert plan.site(IN2P3).chunks
    local_sites.stop_site(IN2P3)
    try:
        results = run_round(catalogue, sites, tool, storage, plan)
        down = [r for r in results if r.site == IN2P3]
        assert down and all(r.failed and set(r.transient) == set(r.failed) for r in down)
        status = replication.block_status(catalogue, sites, block.data_type, block.block_id, retry=NO_BACKOFF)
        assert status[CNAF].status == "Processed"
        assert status[IN2P3].status == "Assigned" and status[IN2P3].pending == status[IN2P3].assigned
    finally:
        local_sites.start_site(IN2P3)
    wait_reachable(storage, sites[IN2P3].pfn("/juno"))
    retry_plan = replication.plan_block(catalogue, sites, block.data_type, block.block_id, only=only, retry=NO_BACKOFF)
    assert {c.site for c in retry_plan.chunks} == {IN2P3}
    assert all(f.attempt == 1 for c in retry_plan.chunks for f in c.files)
    run_round(catalogue, sites, tool, storage, retry_plan)
    status = replication.block_status(catalogue, sites, block.data_type, block.block_id, retry=NO_BACKOFF)
    assert status[IN2P3].status == "Processed" and status[CNAF].status == "Processed"


def test_a_corrupted_replica_is_caught_and_retransferred(
    catalogue: Catalogue, storage: Gfal2Storage, local_sites: LocalSites, tool: Gfal2Transfertool
) -> None:
    sites = local_sites.sites_config
    block = new_block(catalogue, storage, sites, 6)
    plan = replication.plan_block(catalogue, sites, block.data_type, block.block_id, only=[CNAF])
    [chunk] = plan.chunks
    run_round(catalogue, sites, tool, storage, plan)
    assert set(states_at(catalogue, block, CNAF).values()) == {ReplicaState.VALIDATED}

    silent, touched = block.files[1], block.files[4]
    for record, keep_mtime in ((silent, True), (touched, False)):
        path = on_disk(local_sites, CNAF, record.lfn)
        before = path.stat()
        with open(path, "r+b") as f:
            f.seek(record.size // 2)
            byte = f.read(1)
            f.seek(record.size // 2)
            f.write(bytes([byte[0] ^ 0xFF]))
        if keep_mtime:  # bit rot: size and mtime unchanged, the server's cached checksum still vouches for it
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        else:
            os.utime(path, (before.st_atime + 5, before.st_mtime + 5))

    # The catalogue still believes every replica is good, so nothing is planned until validation says otherwise.
    assert replication.plan_block(catalogue, sites, block.data_type, block.block_id, only=[CNAF]).chunks == []
    server_view = replication.validate_chunk(chunk, catalogue=catalogue, sites=sites, storage=storage)
    assert touched.lfn in server_view.bad
    read_back = replication.validate_chunk(chunk, catalogue=catalogue, sites=sites, storage=storage, read_back=True)
    assert set(read_back.bad) == {silent.lfn, touched.lfn}
    assert "read back" in read_back.bad[silent.lfn]
    assert states_at(catalogue, block, CNAF)[silent.lfn] is ReplicaState.BAD

    retry = replication.plan_block(catalogue, sites, block.data_type, block.block_id, only=[CNAF], retry=NO_BACKOFF)
    assert sorted(f.lfn for c in retry.chunks for f in c.files) == sorted([silent.lfn, touched.lfn])
    [result] = [
        replication.replicate_chunk(c, catalogue=catalogue, sites=sites, transfertool=tool, storage=storage)
        for c in retry.chunks
    ]
    assert result.copied == 2 and result.bytes == silent.size + touched.size
    after = replication.validate_chunk(chunk, catalogue=catalogue, sites=sites, storage=storage, read_back=True)
    assert after.bad == {} and after.good == len(block.files)
    assert set(states_at(catalogue, block, CNAF).values()) == {ReplicaState.VALIDATED}
    assert on_disk(local_sites, CNAF, silent.lfn).read_bytes() == block.contents[silent.lfn]


def test_bounded_retries_end_in_problematic_with_the_reason(
    catalogue: Catalogue, storage: Gfal2Storage, local_sites: LocalSites, tool: Gfal2Transfertool
) -> None:
    sites = local_sites.sites_config
    block = new_block(catalogue, storage, sites, 4)
    rotten = block.files[2]
    storage.unlink(sites.tier0.pfn(rotten.lfn))
    storage.put_bytes(sites.tier0.pfn(rotten.lfn), os.urandom(rotten.size))  # the only source no longer matches
    retry = RetryPolicy(max_attempts=2, backoff=timedelta(0))
    replication.run_block(
        catalogue=catalogue,
        sites=sites,
        transfertool=tool,
        storage=storage,
        data_type=block.data_type,
        block_id=block.block_id,
        only=[CNAF],
        retry=retry,
        rounds=5,
    )
    status = replication.block_status(catalogue, sites, block.data_type, block.block_id, retry=retry)[CNAF]
    assert (status.status, status.assigned, status.processed, status.problematic) == ("Problematic", 4, 3, 1)
    assert list(status.reasons) == [rotten.lfn]
    assert "2 attempts" in status.reasons[rotten.lfn] and "checksum mismatch at source" in status.reasons[rotten.lfn]
    plan = replication.plan_block(catalogue, sites, block.data_type, block.block_id, only=[CNAF], retry=retry)
    assert plan.chunks == [] and list(plan.site(CNAF).problematic) == [rotten.lfn]


def test_multihop_block_through_fts3(
    catalogue: Catalogue, storage: Gfal2Storage, local_sites: LocalSites, fts3_double: Fts3Double
) -> None:
    sites = local_sites.sites_config
    block = new_block(catalogue, storage, sites, 5)
    fts3 = get_transfertool("fts3", endpoint=fts3_double.url, token=fts3_double.token)
    plan = replication.plan_block(catalogue, sites, block.data_type, block.block_id, only=[JINR], multihop=True)
    assert all(f.hops == (CNAF,) for c in plan.chunks for f in c.files)
    for chunk in plan.chunks:
        result = replication.replicate_chunk(
            chunk, catalogue=catalogue, sites=sites, transfertool=fts3, storage=storage, poll_interval=0.3
        )
        assert result.failed == {} and result.copied == len(chunk.files)
        assert len(result.job_ids) == len(chunk.files)  # one FTS job per multihop file
        replication.validate_chunk(chunk, catalogue=catalogue, sites=sites, storage=storage)
    assert set(states_at(catalogue, block, JINR).values()) == {ReplicaState.VALIDATED}
    for f in block.files:
        assert storage.checksum(sites[CNAF].pfn(f.lfn)) == f.adler32  # the hop holds it too
    # Resubmitting the same chunk through FTS finds every destination already right: no job at all.
    again = replication.replicate_chunk(
        plan.chunks[0], catalogue=catalogue, sites=sites, transfertool=fts3, storage=storage, poll_interval=0.3
    )
    assert (again.copied, again.bytes, again.job_ids) == (0, 0, ())
