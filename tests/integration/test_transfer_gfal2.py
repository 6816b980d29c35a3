"""The gfal2 transfer backend against the real loopback xrootd sites (root:// and a davs:// door)."""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any, cast

import pytest

from rawflow.grid.xrootd import LocalSites
from rawflow.storage.base import CopyRequest, CopyResult, Storage
from rawflow.storage.gfal2_storage import Gfal2Storage
from rawflow.transfer import FileState, JobState, TransferFile, TransferJob, get_transfertool
from rawflow.transfer.engine import CopyTask, StorageSpec
from rawflow.transfer.gfal2_tool import Gfal2Transfertool
from tests.integration.transfer_files import CNAF, IN2P3, JINR, T0, Seeded, seed, transfer


@pytest.fixture
def tool(storage_spec: StorageSpec) -> Gfal2Transfertool:
    made = get_transfertool("gfal2", storage=storage_spec)
    assert isinstance(made, Gfal2Transfertool)
    return made


def test_tpc_and_streamed_bulk_copies_verify_and_rerun_moves_nothing(
    tool: Gfal2Transfertool, storage: Gfal2Storage, local_sites: LocalSites, storage_spec: StorageSpec
) -> None:
    sites = local_sites.sites_config
    files = seed(storage, sites, T0, 6)
    to_root = TransferJob("gfal2-root-" + files[0].lfn, tuple(transfer(f, sites, IN2P3, T0) for f in files))
    to_davs = TransferJob("gfal2-davs-" + files[0].lfn, tuple(transfer(f, sites, CNAF, T0) for f in files))
    assert sites[IN2P3].scheme == "root" and sites[CNAF].scheme == "davs"

    ids = tool.submit([to_root, to_davs])
    assert ids == [to_root.key, to_davs.key]
    statuses = tool.poll(ids)
    for job_id in ids:
        assert statuses[job_id].state is JobState.FINISHED
        assert [f.state for f in statuses[job_id].files] == [FileState.FINISHED] * len(files)
        assert [f.bytes for f in statuses[job_id].files] == [len(f.data) for f in files]
        assert all(not f.skipped for f in statuses[job_id].files)
    for f in files:
        for site in (IN2P3, CNAF):
            assert storage.checksum(sites[site].pfn(f.lfn)) == f.adler32
            assert storage.stat(sites[site].pfn(f.lfn)).size == len(f.data)

    # Another worker (a fresh backend) running the same jobs again moves no bytes.
    again = Gfal2Transfertool(storage_spec)
    rerun = again.poll(again.submit([to_root, to_davs]))
    for status in rerun.values():
        assert status.state is JobState.FINISHED
        assert all(f.skipped and f.bytes == 0 for f in status.files)


def test_alternative_source_is_used_when_the_first_is_missing(
    tool: Gfal2Transfertool, storage: Gfal2Storage, local_sites: LocalSites
) -> None:
    sites = local_sites.sites_config
    [only_at_in2p3] = seed(storage, sites, IN2P3, 1)
    job = TransferJob("gfal2-alt-" + only_at_in2p3.lfn, (transfer(only_at_in2p3, sites, JINR, T0, IN2P3),))
    [status] = tool.poll(tool.submit([job])).values()
    [result] = status.files
    assert status.state is JobState.FINISHED
    assert result.source == sites[IN2P3].pfn(only_at_in2p3.lfn)
    assert storage.checksum(sites[JINR].pfn(only_at_in2p3.lfn)) == only_at_in2p3.adler32


def test_a_wrong_destination_is_replaced_and_a_wrong_source_refused(
    tool: Gfal2Transfertool, storage: Gfal2Storage, local_sites: LocalSites
) -> None:
    sites = local_sites.sites_config
    good, corrupt_source = seed(storage, sites, T0, 2)
    storage.put_bytes(sites[IN2P3].pfn(good.lfn), b"not the right content")
    replaced = TransferJob("gfal2-replace-" + good.lfn, (transfer(good, sites, IN2P3, T0),))
    lying = TransferFile(
        corrupt_source.lfn,
        (sites[T0].pfn(corrupt_source.lfn),),
        sites[IN2P3].pfn(corrupt_source.lfn),
        len(corrupt_source.data),
        "0badc0de",  # the catalogue's checksum: the source no longer matches it
    )
    refuse = TransferJob("gfal2-refuse-" + corrupt_source.lfn, (lying,))
    statuses = tool.poll(tool.submit([replaced, refuse]))
    assert statuses[replaced.key].state is JobState.FINISHED
    assert statuses[replaced.key].files[0].bytes == len(good.data)
    assert storage.checksum(sites[IN2P3].pfn(good.lfn)) == good.adler32
    failed = statuses[refuse.key].files[0]
    assert failed.state is FileState.FAILED
    assert failed.reason is not None and "checksum mismatch at source" in failed.reason
    assert not storage.exists(sites[IN2P3].pfn(corrupt_source.lfn))


def test_many_failures_in_one_bulk_copy_fail_cleanly(
    tool: Gfal2Transfertool, storage: Gfal2Storage, local_sites: LocalSites
) -> None:
    # python3-gfal2 segfaults when two or more files of one bulk copy fail: this must cost nothing but those files.
    sites = local_sites.sites_config
    present = seed(storage, sites, T0, 2)
    missing = [Seeded(f"/juno/test/{secrets.token_hex(4)}/gone{i}.dat", b"x" * 10) for i in range(4)]
    job = TransferJob(
        "gfal2-failures-" + present[0].lfn, tuple(transfer(f, sites, IN2P3, T0) for f in present + missing)
    )
    status = tool.poll(tool.submit([job]))[job.key]
    assert status.state is JobState.FINISHEDDIRTY
    states = {f.lfn: f.state for f in status.files}
    assert all(states[f.lfn] is FileState.FINISHED for f in present)
    assert all(states[f.lfn] is FileState.FAILED for f in missing)
    assert all(storage.checksum(sites[IN2P3].pfn(f.lfn)) == f.adler32 for f in present)


def test_multihop_goes_through_the_hop(tool: Gfal2Transfertool, storage: Gfal2Storage, local_sites: LocalSites) -> None:
    sites = local_sites.sites_config
    [f] = seed(storage, sites, T0, 1)
    job = TransferJob("gfal2-multihop-" + f.lfn, (transfer(f, sites, JINR, T0, hops=(CNAF,)),))
    status = tool.poll(tool.submit([job]))[job.key]
    assert status.state is JobState.FINISHED
    assert status.files[0].source == sites[T0].pfn(f.lfn)
    for site in (CNAF, JINR):
        assert storage.checksum(sites[site].pfn(f.lfn)) == f.adler32


class _CallLog:
    """The engine's in-process storage with every call recorded (the storage itself is the real gfal2 one)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._storage, name)
        if not callable(attribute):
            return attribute

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, str(args[0]) if args else ""))
            return attribute(*args, **kwargs)

        return recorded


def test_each_copy_is_measured_once_in_the_copy_child_not_in_the_task_process(
    tool: Gfal2Transfertool, storage: Gfal2Storage, local_sites: LocalSites
) -> None:
    # A WebDAV request in the task process re-reads the CA bundle (~20 ms of CPU); the copy child reads each
    # destination right after the copy and the engine compares what it reports.
    sites = local_sites.sites_config
    files = seed(storage, sites, T0, 4)
    jobs = [
        TransferJob(f"gfal2-measured-{site}-" + files[0].lfn, tuple(transfer(f, sites, site, T0) for f in files))
        for site in (CNAF, IN2P3)
    ]
    in_task = _CallLog(tool.engine.storage)
    tool.engine._storage = cast(Storage, in_task)
    statuses = tool.poll(tool.submit(jobs))
    assert all(s.state is JobState.FINISHED for s in statuses.values())
    destinations = {sites[site].pfn(f.lfn) for site in (CNAF, IN2P3) for f in files}
    asked = [(call, url) for call, url in in_task.calls if url in destinations]
    assert asked == [], f"the task process asked the destinations itself: {asked}"
    assert {call for call, _ in in_task.calls} <= {"listdir"}  # one listing per target directory, nothing else
    for url in destinations:
        assert storage.checksum(url) == next(f.adler32 for f in files if url.endswith(f.lfn))


def test_a_measured_checksum_that_differs_fails_the_copy_and_names_the_replica(
    tool: Gfal2Transfertool, storage: Gfal2Storage, local_sites: LocalSites
) -> None:
    sites = local_sites.sites_config
    [f] = seed(storage, sites, T0, 1)
    source, target = sites[T0].pfn(f.lfn), sites[CNAF].pfn(f.lfn)
    task = CopyTask((source,), target, f.adler32, len(f.data))
    copied = CopyResult(CopyRequest(source, target), ok=True, size_at_destination=len(f.data))
    assert tool.engine._verify(source, target, task, "both", replace(copied, adler32_at_destination=f.adler32)) is None
    wrong = tool.engine._verify(source, target, task, "both", replace(copied, adler32_at_destination="0badc0de"))
    assert wrong == (f"checksum mismatch at {target}: 0badc0de, expected {f.adler32}", False)
    short = tool.engine._verify(source, target, task, "both", replace(copied, size_at_destination=1))
    assert short == (f"size mismatch at {target}: 1 bytes, expected {len(f.data)}", False)
