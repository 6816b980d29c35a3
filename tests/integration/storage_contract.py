"""The contract every :class:`~rawflow.storage.base.Storage` backend must pass.

Subclass :class:`StorageContract` in a ``test_*.py`` module and provide two fixtures:
``backend`` (the Storage under test) and ``base_url`` (a writable directory URL on it). Every test
works in its own fresh sub-directory, so the suite can share one server with other tests.
"""

from __future__ import annotations

import os
import uuid
import zlib

import pytest

from rawflow.errors import PermanentStorageError, StorageNotFoundError
from rawflow.storage.base import CopyRequest, Storage


def adler32_hex(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


class StorageContract:
    @pytest.fixture
    def root(self, backend: Storage, base_url: str) -> str:
        url = f"{base_url.rstrip('/')}/contract-{uuid.uuid4().hex[:12]}"
        backend.mkdir_p(url)
        return url

    def test_is_a_storage(self, backend: Storage) -> None:
        assert isinstance(backend, Storage)

    def test_put_then_read_binary_bytes(self, backend: Storage, root: str) -> None:
        data = os.urandom(300_000) + bytes(range(256))
        backend.put_bytes(f"{root}/a/b/file.dat", data)  # creates the parent directories
        assert backend.read_bytes(f"{root}/a/b/file.dat") == data

    def test_empty_file(self, backend: Storage, root: str) -> None:
        backend.put_bytes(f"{root}/empty.dat", b"")
        assert backend.stat(f"{root}/empty.dat").size == 0
        assert backend.read_bytes(f"{root}/empty.dat") == b""
        assert backend.checksum(f"{root}/empty.dat") == "00000001"

    def test_stat_file_and_directory(self, backend: Storage, root: str) -> None:
        backend.put_bytes(f"{root}/f.dat", b"x" * 1234)
        st = backend.stat(f"{root}/f.dat")
        assert (st.size, st.is_dir) == (1234, False)
        assert st.mtime > 0
        assert backend.stat(root).is_dir

    def test_checksum_is_adler32_of_the_bytes(self, backend: Storage, root: str) -> None:
        data = os.urandom(1 << 20)
        backend.put_bytes(f"{root}/c.dat", data)
        value = backend.checksum(f"{root}/c.dat", "adler32")
        assert value == adler32_hex(data)
        assert len(value) == 8 and value == value.lower()

    def test_small_checksum_is_zero_padded(self, backend: Storage, root: str) -> None:
        backend.put_bytes(f"{root}/tiny.dat", b"\x00")  # adler32 = 0x00010001
        assert backend.checksum(f"{root}/tiny.dat") == "00010001"

    def test_exists(self, backend: Storage, root: str) -> None:
        assert not backend.exists(f"{root}/nothing.dat")
        backend.put_bytes(f"{root}/something.dat", b"1")
        assert backend.exists(f"{root}/something.dat")

    def test_mkdir_p_is_idempotent_and_nested(self, backend: Storage, root: str) -> None:
        backend.mkdir_p(f"{root}/x/y/z")
        backend.mkdir_p(f"{root}/x/y/z")
        assert backend.stat(f"{root}/x/y/z").is_dir

    def test_listdir_gives_sorted_names(self, backend: Storage, root: str) -> None:
        for name in ("b.dat", "a.dat", "c.dat"):
            backend.put_bytes(f"{root}/list/{name}", name.encode())
        backend.mkdir_p(f"{root}/list/sub")
        assert backend.listdir(f"{root}/list") == ["a.dat", "b.dat", "c.dat", "sub"]

    def test_list_sizes_gives_each_files_size_and_leaves_directories_out(self, backend: Storage, root: str) -> None:
        for name, size in (("b.dat", 10), ("a.dat", 0), ("c.dat", 70_000)):
            backend.put_bytes(f"{root}/sizes/{name}", b"z" * size)
        backend.mkdir_p(f"{root}/sizes/sub")
        assert backend.list_sizes(f"{root}/sizes") == {"a.dat": 0, "b.dat": 10, "c.dat": 70_000}

    def test_list_sizes_of_a_missing_directory_is_not_found(self, backend: Storage, root: str) -> None:
        with pytest.raises(StorageNotFoundError):
            backend.list_sizes(f"{root}/no-such-dir")

    def test_unlink(self, backend: Storage, root: str) -> None:
        backend.put_bytes(f"{root}/gone.dat", b"bye")
        backend.unlink(f"{root}/gone.dat")
        assert not backend.exists(f"{root}/gone.dat")

    @pytest.mark.parametrize("operation", ["stat", "read_bytes", "checksum", "unlink", "listdir"])
    def test_missing_is_not_found(self, backend: Storage, root: str, operation: str) -> None:
        with pytest.raises(StorageNotFoundError) as caught:
            getattr(backend, operation)(f"{root}/missing")
        assert isinstance(caught.value, PermanentStorageError)
        assert f"{root}/missing" in str(caught.value)

    def test_bulk_copy_verifies_every_file(self, backend: Storage, root: str) -> None:
        payloads = {f"f{i:03d}.dat": os.urandom(1000 + i) for i in range(12)}
        for name, data in payloads.items():
            backend.put_bytes(f"{root}/src/{name}", data)
        requests = [
            CopyRequest(f"{root}/src/{n}", f"{root}/dst/deep/{n}", checksum=adler32_hex(d), size=len(d))
            for n, d in payloads.items()
        ]
        results = backend.copy(requests)
        assert [r.request for r in results] == requests
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        assert [r.bytes for r in results] == [len(d) for d in payloads.values()]
        for name, data in payloads.items():
            assert backend.checksum(f"{root}/dst/deep/{name}") == adler32_hex(data)

    def test_copy_never_raises_for_one_bad_file(self, backend: Storage, root: str) -> None:
        backend.put_bytes(f"{root}/good.dat", b"good")
        results = backend.copy(
            [
                CopyRequest(f"{root}/good.dat", f"{root}/out/good.dat"),
                CopyRequest(f"{root}/absent.dat", f"{root}/out/absent.dat"),
                CopyRequest(f"{root}/good.dat", f"{root}/out/good2.dat"),
            ]
        )
        assert [r.ok for r in results] == [True, False, True]
        assert results[1].transient is False
        assert "absent.dat" in (results[1].error or "")
        assert not backend.exists(f"{root}/out/absent.dat")

    def test_copy_rejects_a_source_that_differs_from_the_catalogue(self, backend: Storage, root: str) -> None:
        backend.put_bytes(f"{root}/s.dat", b"payload")
        wrong_sum, wrong_size = backend.copy(
            [
                CopyRequest(f"{root}/s.dat", f"{root}/o1.dat", checksum="deadbeef"),
                CopyRequest(f"{root}/s.dat", f"{root}/o2.dat", size=999),
            ]
        )
        assert not wrong_sum.ok and not wrong_sum.transient and "deadbeef" in (wrong_sum.error or "")
        assert not wrong_size.ok and not wrong_size.transient
        assert not backend.exists(f"{root}/o1.dat") and not backend.exists(f"{root}/o2.dat")

    def test_copy_to_an_existing_destination(self, backend: Storage, root: str) -> None:
        backend.put_bytes(f"{root}/v1.dat", b"version one")
        backend.put_bytes(f"{root}/v2.dat", b"version two!")
        backend.put_bytes(f"{root}/same.dat", b"version one")
        backend.put_bytes(f"{root}/other.dat", b"something else")
        same, different = backend.copy(
            [CopyRequest(f"{root}/v1.dat", f"{root}/same.dat"), CopyRequest(f"{root}/v1.dat", f"{root}/other.dat")]
        )
        assert same.ok, same.error  # identical content already there: a retried copy is done
        assert not different.ok and not different.transient
        assert backend.read_bytes(f"{root}/other.dat") == b"something else"
        (replaced,) = backend.copy([CopyRequest(f"{root}/v2.dat", f"{root}/other.dat")], overwrite=True)
        assert replaced.ok, replaced.error
        assert backend.read_bytes(f"{root}/other.dat") == b"version two!"

    def test_copy_rejects_an_unknown_tpc_mode(self, backend: Storage, root: str) -> None:
        with pytest.raises(ValueError, match="tpc"):
            backend.copy([CopyRequest(f"{root}/a", f"{root}/b")], tpc="sometimes")
