"""Small root:// → root:// copies through XrdCl's CopyProcess (the streamed path of Gfal2Storage.copy), against the
real loopback xrootd sites."""

from __future__ import annotations

import errno
import secrets
import subprocess
import sys

import pytest

from rawflow.errors import PermanentStorageError, StorageNotFoundError
from rawflow.grid.xrootd import LocalSites
from rawflow.storage.base import CopyRequest
from rawflow.storage.gfal2_storage import Gfal2Storage
from rawflow.storage.xrdcl_copy import copy_root_to_root, with_token
from tests.integration.transfer_files import IN2P3, T0, Seeded, seed


def requests_for(local_sites: LocalSites, files: list[Seeded]) -> list[CopyRequest]:
    sites = local_sites.sites_config
    return [CopyRequest(sites[T0].pfn(f.lfn), sites[IN2P3].pfn(f.lfn), None, len(f.data)) for f in files]


def test_streamed_root_copies_report_what_the_destination_holds(storage: Gfal2Storage, local_sites: LocalSites) -> None:
    files = seed(storage, local_sites.sites_config, T0, 30, size=4096)
    requests = requests_for(local_sites, files)
    assert all(r.source.startswith("root://") and r.destination.startswith("root://") for r in requests)

    results = storage.copy(requests, tpc="never", parallel=8, verify=False, preflight=False)

    assert [r.ok for r in results] == [True] * len(files), [r.error for r in results if not r.ok]
    for f, result in zip(files, results, strict=True):
        # Reported by the destination's server right after the copy, and what a later stat/checksum finds.
        assert result.adler32_at_destination == f.adler32 == storage.checksum(result.request.destination)
        assert result.size_at_destination == len(f.data) == storage.stat(result.request.destination).size


def test_one_missing_source_fails_alone_and_as_not_found(storage: Gfal2Storage, local_sites: LocalSites) -> None:
    files = seed(storage, local_sites.sites_config, T0, 6, size=4096)
    requests = requests_for(local_sites, files)
    gone = CopyRequest(requests[0].source + f".gone-{secrets.token_hex(3)}", requests[0].destination + ".gone")
    batch = [*requests[:3], gone, *requests[3:]]

    outcomes = copy_root_to_root(batch, parallel=4, overwrite=False, timeout=60)

    assert [o.error is None for o in outcomes] == [True, True, True, False, True, True, True]
    error = outcomes[3].error
    assert isinstance(error, StorageNotFoundError) and error.errno == errno.ENOENT
    assert not storage.exists(gone.destination)  # nothing half-written is left (posc)


def test_an_existing_destination_is_kept_when_identical_and_refused_when_not(
    storage: Gfal2Storage, local_sites: LocalSites
) -> None:
    files = seed(storage, local_sites.sites_config, T0, 2, size=4096)
    same, other = requests_for(local_sites, files)
    storage.put_bytes(same.destination, files[0].data)
    storage.put_bytes(other.destination, b"something else")

    outcomes = copy_root_to_root([same, other], parallel=2, overwrite=False, timeout=60)
    assert all(isinstance(o.error, PermanentStorageError) and o.error.errno == errno.EEXIST for o in outcomes)

    # Through the storage: an identical replica already there is a copy done (0 bytes); a different one is not.
    results = storage.copy([same, other], tpc="never", parallel=2, verify=False, preflight=False)
    assert results[0].ok and results[0].bytes == 0
    assert not results[1].ok and "exists" in (results[1].error or "")
    assert storage.read_bytes(other.destination) == b"something else"  # never overwritten without asking


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("root://a:1//data/f", "root://a:1//data/f?authz=Bearer%20tok-a"),
        ("root://a:1//data/sub/f?x=1", "root://a:1//data/sub/f?x=1&authz=Bearer%20tok-sub"),
        ("root://b:2//data/f", "root://b:2//data/f"),
    ],
)
def test_tokens_go_with_the_longest_matching_prefix(url: str, expected: str) -> None:
    tokens = (("root://a:1//data/", "tok-a"), ("root://a:1//data/sub/", "tok-sub"))
    assert with_token(url, tokens) == expected


def test_exit_walks_no_objects_in_a_process_that_holds_airflow() -> None:
    # XRootD 5.5's own exit handler walks every object; with Airflow's lazy objects around, that imported modules
    # at exit ("Unable to import cloudpickle" logging errors after the test run; with a bare `import XRootD.client`
    # this script prints them). Rawflow's import keeps only the handler's thread stop.
    code = (
        "import airflow.providers.standard.operators.python\n"
        "from rawflow.storage.xrdcl_copy import xrootd_client\n"
        "xrootd_client()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    assert "cloudpickle" not in done.stderr and "Logging error" not in done.stderr, done.stderr[-500:]
