"""The fts3 backend through the official ``fts3`` REST client, against the FTS3-REST TEST DOUBLE, which copies
between the real loopback xrootd sites with gfal2."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

import pytest
from fts3.rest.client import easy
from fts3.rest.client.exceptions import ClientError

from rawflow.grid.xrootd import LocalSites
from rawflow.storage.gfal2_storage import Gfal2Storage
from rawflow.testing.fts3_double import Fts3Double
from rawflow.transfer import (
    FileState,
    JobState,
    JobStatus,
    TransferAuthError,
    TransferFile,
    TransferJob,
    TransferJobError,
    get_transfertool,
)
from rawflow.transfer.fts3_tool import Fts3Transfertool
from tests.integration.transfer_files import CNAF, IN2P3, JINR, T0, Seeded, seed, transfer


def wait(tool: Fts3Transfertool, ids: Sequence[str], timeout: float = 120) -> dict[str, JobStatus]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = tool.poll(ids)
        if all(s.terminal for s in statuses.values()):
            return statuses
        assert time.monotonic() < deadline, f"jobs not done after {timeout} s: {statuses}"
        time.sleep(0.3)


@pytest.fixture
def tool(fts3_double: Fts3Double) -> Fts3Transfertool:
    made = get_transfertool("fts3", endpoint=fts3_double.url, token=fts3_double.token)
    assert isinstance(made, Fts3Transfertool)
    return made


def test_the_client_talks_to_the_double_and_a_wrong_token_is_refused(
    tool: Fts3Transfertool, fts3_double: Fts3Double
) -> None:
    assert tool.whoami()["vos"] == [fts3_double.vo]
    assert tool.context.get_endpoint_info()["api"]["major"] == 3
    intruder = get_transfertool("fts3", endpoint=fts3_double.url, token="not-the-token")
    with pytest.raises(TransferAuthError):
        intruder.whoami()
    assert fts3_double.token not in repr(tool)


def test_bulk_job_copies_with_checksum_verification(
    tool: Fts3Transfertool, storage: Gfal2Storage, local_sites: LocalSites, fts3_double: Fts3Double
) -> None:
    sites = local_sites.sites_config
    files = seed(storage, sites, T0, 4, size=32 * 1024)
    job = TransferJob("fts-bulk-" + files[0].lfn, tuple(transfer(f, sites, IN2P3, T0) for f in files))
    description = tool.job_description(job)
    assert description["params"]["verify_checksum"] == "both"
    assert description["params"]["overwrite"] is False
    assert description["params"]["id_generator"] == "deterministic"
    assert description["files"][0]["checksum"] == f"ADLER32:{files[0].adler32}"

    [job_id] = tool.submit([job])
    status = wait(tool, [job_id])[job_id]
    assert status.state is JobState.FINISHED
    assert sorted(f.lfn for f in status.files) == sorted(f.lfn for f in files)
    assert all(f.state is FileState.FINISHED for f in status.files)
    for f in files:
        assert storage.checksum(sites[IN2P3].pfn(f.lfn)) == f.adler32
    listed = easy.list_jobs(tool.context, state_in=["FINISHED"])
    assert job_id in {j["job_id"] for j in listed}


def test_multi_source_alternative_is_used_when_the_first_source_is_missing(
    tool: Fts3Transfertool, storage: Gfal2Storage, local_sites: LocalSites
) -> None:
    sites = local_sites.sites_config
    [f] = seed(storage, sites, CNAF, 1, size=32 * 1024)  # not at the tier-0: its first source is missing
    job = TransferJob("fts-alt-" + f.lfn, (transfer(f, sites, IN2P3, T0, CNAF),))
    description = tool.job_description(job)
    assert description["files"][0]["sources"] == [sites[T0].pfn(f.lfn), sites[CNAF].pfn(f.lfn)]
    [job_id] = tool.submit([job])
    status = wait(tool, [job_id])[job_id]
    assert status.state is JobState.FINISHED
    assert status.files[0].source == sites[CNAF].pfn(f.lfn)
    rows = easy.get_job_status(tool.context, job_id, list_files=True)["files"]
    assert {r["source_surl"]: r["file_state"] for r in rows} == {
        sites[T0].pfn(f.lfn): "FAILED",
        sites[CNAF].pfn(f.lfn): "FINISHED",
    }
    assert storage.checksum(sites[IN2P3].pfn(f.lfn)) == f.adler32


def test_resubmission_with_the_same_sid_returns_the_job_and_copies_nothing(
    tool: Fts3Transfertool, storage: Gfal2Storage, local_sites: LocalSites, fts3_double: Fts3Double
) -> None:
    sites = local_sites.sites_config
    files = seed(storage, sites, T0, 3, size=32 * 1024)
    job = TransferJob("fts-again-" + files[0].lfn, tuple(transfer(f, sites, JINR, T0) for f in files))
    [job_id] = tool.submit([job])
    assert wait(tool, [job_id])[job_id].state is JobState.FINISHED
    copies = fts3_double.copies
    mtimes = [storage.stat(sites[JINR].pfn(f.lfn)).mtime for f in files]

    [again] = get_transfertool("fts3", endpoint=fts3_double.url, token=fts3_double.token).submit([job])
    assert again == job_id
    assert wait(tool, [again])[again].state is JobState.FINISHED
    time.sleep(0.5)  # a second copy, if one were queued, would have started by now
    assert fts3_double.copies == copies
    assert [storage.stat(sites[JINR].pfn(f.lfn)).mtime for f in files] == mtimes


def test_multihop_jinr_via_cnaf(tool: Fts3Transfertool, storage: Gfal2Storage, local_sites: LocalSites) -> None:
    sites = local_sites.sites_config
    [f] = seed(storage, sites, T0, 1, size=32 * 1024)
    job = TransferJob("fts-multihop-" + f.lfn, (transfer(f, sites, JINR, T0, hops=(CNAF,)),))
    description = tool.job_description(job)
    assert description["params"]["multihop"] is True
    assert [(t["sources"], t["destinations"]) for t in description["files"]] == [
        ([sites[T0].pfn(f.lfn)], [sites[CNAF].pfn(f.lfn)]),
        ([sites[CNAF].pfn(f.lfn)], [sites[JINR].pfn(f.lfn)]),
    ]
    [job_id] = tool.submit([job])
    status = wait(tool, [job_id])[job_id]
    assert status.state is JobState.FINISHED
    assert [(s.lfn, s.destination) for s in status.files] == [(f.lfn, sites[JINR].pfn(f.lfn))]
    for site in (CNAF, JINR):
        assert storage.checksum(sites[site].pfn(f.lfn)) == f.adler32


def test_checksum_mismatch_and_existing_destination_fail_the_file(
    tool: Fts3Transfertool, storage: Gfal2Storage, local_sites: LocalSites
) -> None:
    sites = local_sites.sites_config
    lying, existing = seed(storage, sites, T0, 2, size=32 * 1024)
    storage.put_bytes(sites[IN2P3].pfn(existing.lfn), existing.data)
    wrong = TransferFile(
        lying.lfn, (sites[T0].pfn(lying.lfn),), sites[IN2P3].pfn(lying.lfn), len(lying.data), "0badc0de"
    )
    job = TransferJob("fts-fail-" + lying.lfn, (wrong, transfer(existing, sites, IN2P3, T0)))
    [job_id] = tool.submit([job])
    status = wait(tool, [job_id])[job_id]
    assert status.state is JobState.FAILED
    reasons = {f.lfn: f.reason or "" for f in status.files}
    assert "checksum mismatch" in reasons[lying.lfn]
    assert "overwrite is not enabled" in reasons[existing.lfn]
    assert not storage.exists(sites[IN2P3].pfn(lying.lfn))


def test_the_double_rejects_what_fts_rejects(tool: Fts3Transfertool, local_sites: LocalSites) -> None:
    sites = local_sites.sites_config
    a, b = (Seeded(f"/juno/test/{secrets.token_hex(4)}/x{i}.dat", b"data") for i in range(2))
    two_files_two_sources = {
        "files": [
            easy.new_transfer(sites[T0].pfn(a.lfn), sites[IN2P3].pfn(a.lfn)),
            easy.new_transfer(sites[T0].pfn(b.lfn), sites[IN2P3].pfn(b.lfn)),
        ],
        "params": {},
    }
    two_files_two_sources["files"][0]["sources"].append(sites[CNAF].pfn(a.lfn))
    with pytest.raises(ClientError, match="Multiple replicas"):
        easy.submit(tool.context, two_files_two_sources)
    with pytest.raises(TransferJobError):
        TransferJob("two-multisource", tuple(transfer(f, sites, IN2P3, T0, CNAF) for f in (a, b)))
