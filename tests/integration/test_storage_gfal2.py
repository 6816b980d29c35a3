"""Gfal2Storage against the real loopback xrootd sites: the storage contract over root:// and davs://,
third-party copies between sites, streamed copies, typed errors and the emulated tape."""

from __future__ import annotations

import os
import signal
import time
import uuid
import zlib
from collections.abc import Iterator

import pytest

from rawflow.errors import PermanentStorageError, StorageNotFoundError, TransientStorageError
from rawflow.grid.xrootd import LocalSites
from rawflow.storage import get_storage
from rawflow.storage.base import CopyRequest
from rawflow.storage.gfal2_storage import Gfal2Storage, copy_kind, skip_ca_bundle_reload
from tests.integration.storage_contract import StorageContract, adler32_hex


def _scratch(prefix: str) -> str:
    return f"{prefix}/juno/test/{uuid.uuid4().hex[:12]}"


class TestContractOverRoot(StorageContract):
    @pytest.fixture
    def backend(self, storage: Gfal2Storage) -> Gfal2Storage:
        return storage

    @pytest.fixture
    def base_url(self, local_sites: LocalSites) -> str:
        return local_sites.doors["IHEP-EOS"]["root"] + "/contract"


class TestContractOverDavs(StorageContract):
    @pytest.fixture
    def backend(self, storage: Gfal2Storage) -> Gfal2Storage:
        return storage

    @pytest.fixture
    def base_url(self, local_sites: LocalSites) -> str:
        return local_sites.doors["CNAF-STORM"]["davs"] + "/contract"


def test_sites_config_points_at_the_loopback_servers(local_sites: LocalSites) -> None:
    config = local_sites.sites_config
    assert config.tier0.name == "IHEP-EOS" and config.archive.name == "IHEP-TAPE"
    for name, prefix in local_sites.url_prefixes.items():
        assert config[name].url_prefix == prefix
        assert "127.0.0.1:" in prefix
    assert config["CNAF-STORM"].scheme == "davs"
    assert config["JINR-EOS"].scheme == "root"
    assert all(daemon.alive() for daemon in local_sites.daemons.values())


def test_registry_builds_the_gfal2_backend(local_sites: LocalSites, storage: Gfal2Storage) -> None:
    built = get_storage("gfal2", bearer_token="t0k3n-not-logged")
    assert isinstance(built, Gfal2Storage)
    assert "t0k3n-not-logged" not in repr(built)
    url = _scratch(local_sites.doors["CNAF-STORM"]["davs"]) + "/token.dat"
    built.put_bytes(url, b"with a bearer token")
    assert storage.read_bytes(url) == b"with a bearer token"


def test_site_prefix_plus_lfn_is_the_same_file_over_both_doors(local_sites: LocalSites, storage: Gfal2Storage) -> None:
    site = local_sites.sites_config["CNAF-STORM"]
    lfn = f"/juno/raw/2025/1101/Daq.000001.Phys.Main.T1.20251101000000.{uuid.uuid4().int % 10**5:05d}.dat"
    storage.put_bytes(site.pfn(lfn), b"one file, two doors")
    root_url = local_sites.doors["CNAF-STORM"]["root"].rstrip("/") + lfn
    assert storage.read_bytes(root_url) == b"one file, two doors"


def _seed(storage: Gfal2Storage, prefix: str, count: int, size: int = 4096) -> dict[str, bytes]:
    files = {f"{prefix}/f{i:04d}.dat": os.urandom(size) for i in range(count)}
    for url, data in files.items():
        storage.put_bytes(url, data)
    return files


def test_root_tpc_ihep_to_jinr(local_sites: LocalSites, storage: Gfal2Storage) -> None:
    src = _scratch(local_sites.doors["IHEP-EOS"]["root"])
    dst = _scratch(local_sites.doors["JINR-EOS"]["root"])
    files = _seed(storage, src, 6)
    requests = [CopyRequest(u, u.replace(src, dst), checksum=adler32_hex(d)) for u, d in files.items()]
    assert copy_kind(requests[0].source, requests[0].destination) == "root-tpc"
    results = storage.copy(requests, tpc="only", parallel=6)
    assert all(r.ok for r in results), [r.error for r in results]
    for request, data in zip(requests, files.values(), strict=True):
        assert storage.checksum(request.destination) == f"{zlib.adler32(data):08x}"
        assert storage.stat(request.destination).size == len(data)


def test_http_tpc_ihep_to_cnaf(local_sites: LocalSites, storage: Gfal2Storage) -> None:
    src = _scratch(local_sites.doors["IHEP-EOS"]["davs"])
    dst = _scratch(local_sites.url_prefixes["CNAF-STORM"])
    files = _seed(storage, src, 5)
    requests = [CopyRequest(u, u.replace(src, dst), checksum=adler32_hex(d)) for u, d in files.items()]
    assert copy_kind(requests[0].source, requests[0].destination) == "http-tpc"
    results = storage.copy(requests, tpc="only", parallel=3)
    assert all(r.ok for r in results), [r.error for r in results]
    assert sorted(storage.listdir(dst)) == sorted(u.rsplit("/", 1)[1] for u in files)


def test_tpc_only_refuses_a_pair_with_no_third_party_path(local_sites: LocalSites, storage: Gfal2Storage) -> None:
    src = _scratch(local_sites.doors["IHEP-EOS"]["root"])
    dst = _scratch(local_sites.url_prefixes["CNAF-STORM"])
    storage.put_bytes(f"{src}/x.dat", b"root to davs")
    (refused,) = storage.copy([CopyRequest(f"{src}/x.dat", f"{dst}/x.dat")], tpc="only")
    assert not refused.ok and not refused.transient and "tpc=only" in (refused.error or "")
    assert not storage.exists(f"{dst}/x.dat")
    (streamed,) = storage.copy([CopyRequest(f"{src}/x.dat", f"{dst}/x.dat")], tpc="auto")
    assert streamed.ok, streamed.error
    assert storage.read_bytes(f"{dst}/x.dat") == b"root to davs"


def test_streamed_copy_never_uses_third_party(local_sites: LocalSites, storage: Gfal2Storage) -> None:
    src = _scratch(local_sites.doors["IHEP-EOS"]["root"])
    dst = _scratch(local_sites.doors["IN2P3-DCACHE"]["root"])
    files = _seed(storage, src, 3, size=(8 << 20) + 17)  # more than one stream chunk
    requests = [CopyRequest(u, u.replace(src, dst), size=len(d)) for u, d in files.items()]
    started = time.monotonic()
    results = storage.copy(requests, tpc="never", parallel=3)
    assert all(r.ok for r in results), [r.error for r in results]
    # A root TPC waits on a ~2.5 s client poll; streaming three small files does not.
    assert time.monotonic() - started < 2.5
    for request, data in zip(requests, files.values(), strict=True):
        assert storage.checksum(request.destination) == adler32_hex(data)


def test_upload_from_a_local_file(tmp_path: os.PathLike[str], local_sites: LocalSites, storage: Gfal2Storage) -> None:
    local = os.path.join(tmp_path, "local.dat")
    data = os.urandom(50_000)
    with open(local, "wb") as f:
        f.write(data)
    dst = _scratch(local_sites.doors["IHEP-EOS"]["root"]) + "/uploaded.dat"
    (result,) = storage.copy([CopyRequest(f"file://{local}", dst, checksum=adler32_hex(data))], tpc="auto")
    assert result.ok, result.error
    assert storage.read_bytes(dst) == data


def test_bulk_root_copy_with_failures_keeps_the_caller_alive(local_sites: LocalSites, storage: Gfal2Storage) -> None:
    """A failing file in a bulk xrootd copy crashes gfal2; the batch runs in a child, so we carry on."""
    src = _scratch(local_sites.doors["IHEP-EOS"]["root"])
    dst = _scratch(local_sites.doors["JINR-EOS"]["root"])
    files = _seed(storage, src, 4)
    requests = [CopyRequest(u, u.replace(src, dst)) for u in files]
    requests.insert(2, CopyRequest(f"{src}/never-written.dat", f"{dst}/never-written.dat"))
    results = storage.copy(requests, tpc="only", parallel=5)
    assert [r.ok for r in results] == [True, True, False, True, True]
    assert "never-written.dat" in (results[2].error or "") and not results[2].transient


def _reachable_again(storage: Gfal2Storage, url: str, within: float = 30) -> float:
    """Seconds until ``url`` answers again: the client remembers a refused connection for a few seconds."""
    started = time.monotonic()
    while True:
        try:
            storage.stat(url)
            return time.monotonic() - started
        except TransientStorageError:
            if time.monotonic() - started > within:
                raise
            time.sleep(0.5)


@pytest.fixture
def stopped_site(local_sites: LocalSites, storage: Gfal2Storage) -> Iterator[str]:
    name = "IN2P3-DCACHE"
    local_sites.stop_site(name)
    try:
        yield name
    finally:
        local_sites.start_site(name)
        for prefix in local_sites.doors[name].values():
            _reachable_again(storage, prefix)


def test_a_stopped_site_gives_transient_errors(
    stopped_site: str, local_sites: LocalSites, storage: Gfal2Storage
) -> None:
    for scheme, prefix in local_sites.doors[stopped_site].items():
        url = f"{prefix}/juno/raw/anything.dat"
        started = time.monotonic()
        with pytest.raises(TransientStorageError) as caught:
            storage.stat(url)
        assert time.monotonic() - started < 30, f"{scheme}: a down site must fail fast"
        assert not isinstance(caught.value, PermanentStorageError)
    src = _scratch(local_sites.doors["IHEP-EOS"]["root"])
    storage.put_bytes(f"{src}/to-down-site.dat", b"x")
    down = local_sites.doors[stopped_site]["root"]
    (result,) = storage.copy([CopyRequest(f"{src}/to-down-site.dat", f"{down}/juno/x/to-down-site.dat")])
    assert not result.ok and result.transient


def test_a_restarted_site_serves_its_files_again(local_sites: LocalSites, storage: Gfal2Storage) -> None:
    url = _scratch(local_sites.doors["JINR-EOS"]["root"]) + "/persist.dat"
    storage.put_bytes(url, b"survives a restart")
    local_sites.stop_site("JINR-EOS")
    try:
        with pytest.raises(TransientStorageError):
            storage.stat(url)
    finally:
        local_sites.start_site("JINR-EOS")
    assert _reachable_again(storage, url) < 30
    assert storage.read_bytes(url) == b"survives a restart"


def test_tape_archive_poll_follows_migration(local_sites: LocalSites, storage: Gfal2Storage) -> None:
    tape = local_sites.sites_config.archive
    src = _scratch(local_sites.doors["IHEP-EOS"]["root"])
    dst = _scratch(tape.url_prefix)
    files = _seed(storage, src, 10)
    results = storage.copy([CopyRequest(u, u.replace(src, dst)) for u in files], parallel=10)
    assert all(r.ok for r in results), [r.error for r in results]
    on_tape = [u.replace(src, dst) for u in files]
    missing = f"{dst}/never-archived.dat"

    before = storage.archive_poll([*on_tape, missing])
    assert all(before[u] is False for u in on_tape)
    assert isinstance(before[missing], str) and "not exist" in before[missing]

    migrated = local_sites.migrate_tape()
    assert {u.split("//", 2)[2] for u in on_tape} <= {p.lstrip("/") for p in migrated}

    after = storage.archive_poll(on_tape)
    assert all(after[u] is True for u in on_tape)
    assert local_sites.migrate_tape() == []  # nothing left to migrate


def test_tape_migrator_daemon(local_sites: LocalSites, storage: Gfal2Storage) -> None:
    url = _scratch(local_sites.sites_config.archive.url_prefix) + "/background.dat"
    storage.put_bytes(url, b"migrated in the background")
    assert storage.archive_poll([url]) == {url: False}
    migrator = local_sites.start_tape_migrator(interval=0.2, settle=0)
    try:
        deadline = time.monotonic() + 20
        while storage.archive_poll([url])[url] is not True and time.monotonic() < deadline:
            time.sleep(0.2)
        assert storage.archive_poll([url]) == {url: True}
    finally:
        local_sites.stop_migrator()
    assert not migrator.alive()


def test_missing_file_on_davs_is_not_found(local_sites: LocalSites, storage: Gfal2Storage) -> None:
    with pytest.raises(StorageNotFoundError):
        storage.stat(local_sites.url_prefixes["CNAF-STORM"] + "/juno/raw/none.dat")


def test_gfal2_leaves_the_callers_signals_alone(local_sites: LocalSites) -> None:
    """gfal2 blocks SIGTERM/SIGINT in the thread that makes a context; the storage must undo that."""
    fresh = Gfal2Storage()
    assert not fresh.exists(local_sites.doors["IHEP-EOS"]["root"] + "/juno/none.dat")
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert signal.SIGTERM not in blocked and signal.SIGINT not in blocked


def test_a_webdav_request_costs_milliseconds_not_a_new_tls_session(
    local_sites: LocalSites, storage: Gfal2Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each WebDAV request used to pay gfal2's SE-token POST (answered 501 and closed: a new TLS session every
    time) and Davix's re-read of the CA bundle: 55 ms per stat measured, the CNAF rate of a day's block. The
    bundle is skipped in the copy children only; this test does the same for its own duration (then restored)."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # whatever it was comes back after the test
    skip_ca_bundle_reload()
    url = _scratch(local_sites.doors["CNAF-STORM"]["davs"]) + "/latency.dat"
    storage.put_bytes(url, b"x" * 4096)
    storage.stat(url)  # the session is made and cached
    count = 40
    start = time.perf_counter()
    for _ in range(count):
        assert storage.stat(url).size == 4096
    per_request = (time.perf_counter() - start) / count
    assert per_request < 0.015, f"a WebDAV stat took {per_request * 1000:.1f} ms (about 0.5 ms expected)"
