"""The DataReceiver's checks: semantic message checks, the Tier-0 comparison and batch de-duplication."""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from rawflow.checks import (
    GB,
    BatchVerdict,
    Limits,
    StorageCheck,
    Tier0Facts,
    check_message,
    compare_with_tier0,
    dedupe,
    tier0_facts,
    tier0_root,
)
from rawflow.errors import StorageNotFoundError, TransientStorageError
from rawflow.messages import Announcement, Reason, Rejection
from rawflow.naming import DataType
from rawflow.sites import Site
from rawflow.storage.base import CopyRequest, CopyResult, StatResult

NAME = "Daq.000123.Det.Physics.Raw.20251101123000.00001.dat"
PATH = f"/eos/ihep/juno/raw/2025/1101/{NAME}"
GOOD: dict[str, Any] = {"FileName": NAME, "FilePath": PATH, "Checksum": "A1B2C3", "Size": 1024, "Type": "RAW"}
LIMITS = Limits(tier0_root="/eos/ihep")
TIER0 = Site(name="IHEP-EOS", role="disk", url_prefix="root://127.0.0.1:1094//eos/ihep", tier0=True)


def check(obj: object, *, topic_type: DataType | None = DataType.RAW, limits: Limits = LIMITS) -> Announcement:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return check_message(raw, topic_type=topic_type, limits=limits)


def reason(obj: object, **kwargs: Any) -> Reason:
    with pytest.raises(Rejection) as info:
        check(obj, **kwargs)
    return info.value.reason


def test_a_good_message_becomes_an_announcement() -> None:
    a = check({**GOOD, "Stream": "Muon", "Timestamp": 0})
    assert a.lfn == f"/juno/raw/2025/1101/{NAME}"
    assert a.block_id == "20251101" and a.block == "RAW-20251101"
    assert a.checksum == "00a1b2c3"  # normalised: lower-case, zero-padded
    assert a.size == 1024 and a.run == 123 and a.stream == "Muon"
    assert a.received_at is not None and a.received_at.year == 1970
    assert check(GOOD).stream == "Physics"  # from the file name when absent


def test_size_limits() -> None:
    assert reason({**GOOD, "Size": 0}) is Reason.ZERO_SIZE
    assert reason({**GOOD, "Size": -5}) is Reason.NEGATIVE_SIZE
    assert reason({**GOOD, "Size": 11 * GB}) is Reason.TOO_LARGE
    assert check({**GOOD, "Size": 10 * GB}).size == 10 * GB  # the limit itself is allowed
    assert reason({**GOOD, "Size": 2000}, limits=Limits(max_file_size=1000)) is Reason.TOO_LARGE


def test_message_cap_is_configurable() -> None:
    big = json.dumps({**GOOD, "Padding": "x" * 2_000_000}).encode()
    assert reason(big) is Reason.MESSAGE_TOO_LARGE
    assert check(big, limits=Limits(max_message_bytes=3_000_000)).size == 1024


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/eos/ihep/juno/raw/2025/../1101/" + NAME, Reason.BAD_PATH),
        ("/eos/ihep/juno/raw/../raw/2025/1101/" + NAME, Reason.BAD_PATH),
        ("eos/ihep/juno/raw/2025/1101/" + NAME, Reason.BAD_PATH),
        ("/eos/ihep/juno/raw/2025/1301/" + NAME, Reason.BAD_PATH),
        ("/eos/ihep/juno/raw/2025//1101/" + NAME, Reason.BAD_PATH),
        ("/eos/ihep/juno/esd/2025/1101/" + NAME, Reason.BAD_PATH),
        ("/eos/ihep/juno/raw/2025/1101/Daq.000123.Det.Physics.Raw.20251101123000.00002.dat", Reason.NAME_PATH_MISMATCH),
        ("/other/root/juno/raw/2025/1101/" + NAME, Reason.WRONG_ROOT),
    ],
)
def test_paths(path: str, expected: Reason) -> None:
    assert reason({**GOOD, "FilePath": path}) is expected


def test_names() -> None:
    assert reason({**GOOD, "FileName": "../" + NAME}) is Reason.BAD_NAME
    assert reason({**GOOD, "FileName": "Daq.x.Det.Physics.Raw.20251101123000.00001.dat"}) is Reason.BAD_NAME
    rtraw = NAME.replace(".dat", ".rtraw")
    # An RTRAW name inside raw/ is a malformed path.
    assert reason({**GOOD, "FileName": rtraw, "FilePath": PATH.replace(NAME, rtraw)}) is Reason.BAD_PATH


def test_type_must_match_topic_and_path() -> None:
    assert reason(GOOD, topic_type=DataType.RTRAW) is Reason.TYPE_TOPIC_MISMATCH
    assert check(GOOD, topic_type=None).data_type is DataType.RAW
    rtraw = NAME.replace(".dat", ".rtraw")
    rt = {**GOOD, "FileName": rtraw, "FilePath": f"/eos/ihep/juno/rtraw/2025/1101/{rtraw}"}
    assert check({**rt, "Type": "RTRAW"}, topic_type=DataType.RTRAW).lfn.startswith("/juno/rtraw/")
    assert reason(rt, topic_type=DataType.RAW) is Reason.TYPE_PATH_MISMATCH


def test_run_must_agree_with_the_file_name() -> None:
    assert check({**GOOD, "Run": 123}).run == 123
    assert reason({**GOOD, "Run": 124}) is Reason.RUN_MISMATCH


def test_any_root_accepted_without_a_tier0_root() -> None:
    assert check({**GOOD, "FilePath": "/x/juno/raw/2025/1101/" + NAME}, limits=Limits()).path.root == "/x"


def test_tier0_root_of_a_site() -> None:
    assert tier0_root(TIER0) == "/eos/ihep"
    assert tier0_root(Site(name="A", role="disk", url_prefix="root://h:1//")) == ""
    assert tier0_root(Site(name="A", role="disk", url_prefix="file:///tmp/x/")) == "/tmp/x"


class RecordingStorage:
    """A stand-in for the storage element, only for what tier0_facts calls (stat and checksum)."""

    def __init__(self, files: dict[str, tuple[int, str]], *, down: bool = False) -> None:
        self.files = files
        self.down = down
        self.calls: list[str] = []
        self.threads: set[str] = set()

    def stat(self, url: str) -> StatResult:
        self.calls.append(f"stat {url}")
        self.threads.add(threading.current_thread().name)
        if self.down:
            raise TransientStorageError("stat", url, "Connection refused", errno.ECONNREFUSED)
        if url not in self.files:
            raise StorageNotFoundError("stat", url, "No such file", errno.ENOENT)
        return StatResult(url=url, size=self.files[url][0], is_dir=False, mtime=0.0)

    def checksum(self, url: str, algorithm: str = "adler32") -> str:
        self.calls.append(f"checksum {url}")
        return self.files[url][1]

    def exists(self, url: str) -> bool:
        return url in self.files

    def mkdir_p(self, url: str) -> None:
        raise AssertionError("not used")

    def listdir(self, url: str) -> list[str]:
        raise AssertionError("not used")

    def unlink(self, url: str) -> None:
        raise AssertionError("not used")

    def put_bytes(self, url: str, data: bytes) -> None:
        raise AssertionError("not used")

    def read_bytes(self, url: str) -> bytes:
        raise AssertionError("not used")

    def copy(
        self, requests: Sequence[CopyRequest], *, tpc: str = "auto", parallel: int = 10, overwrite: bool = False
    ) -> list[CopyResult]:
        raise AssertionError("not used")

    def archive_poll(self, urls: Iterable[str]) -> dict[str, bool | str]:
        raise AssertionError("not used")


def lfn(i: int) -> str:
    return f"/juno/raw/2025/1101/Daq.000123.Det.Physics.Raw.20251101123000.{i:05d}.dat"


def test_tier0_facts_full_mode_checks_each_lfn_once_in_parallel() -> None:
    files = {TIER0.pfn(lfn(i)): (100 + i, f"{i:08x}") for i in range(40)}
    storage = RecordingStorage(files)
    facts = tier0_facts(storage, TIER0, [lfn(i) for i in range(41)] + [lfn(0)], mode=StorageCheck.FULL, parallel=8)
    assert len(facts) == 41
    assert facts[lfn(3)] == Tier0Facts(lfn(3), TIER0.pfn(lfn(3)), exists=True, size=103, adler32="00000003")
    assert not facts[lfn(40)].exists and not facts[lfn(40)].transient
    assert sum(c.startswith("stat") for c in storage.calls) == 41
    assert len(storage.threads) > 1


def test_tier0_facts_size_mode_and_off() -> None:
    storage = RecordingStorage({TIER0.pfn(lfn(1)): (5, "00000001")})
    facts = tier0_facts(storage, TIER0, [lfn(1)], mode=StorageCheck.SIZE)
    assert facts[lfn(1)].size == 5 and facts[lfn(1)].adler32 is None
    assert not any(c.startswith("checksum") for c in storage.calls)
    assert tier0_facts(storage, TIER0, [lfn(1)], mode=StorageCheck.OFF) == {}


def test_tier0_facts_marks_transient_failures_without_raising() -> None:
    facts = tier0_facts(RecordingStorage({}, down=True), TIER0, [lfn(1), lfn(2)], mode=StorageCheck.FULL)
    assert all(f.transient and "Connection refused" in (f.error or "") for f in facts.values())


def announcement(i: int, checksum: str = "00000001", size: int = 100) -> Announcement:
    return check({**GOOD, "FileName": lfn(i).rsplit("/", 1)[1], "FilePath": "/eos/ihep" + lfn(i),
                   "Checksum": checksum, "Size": size})  # fmt: skip


def test_compare_with_tier0() -> None:
    a = announcement(1, "0000abcd", 10)
    url = TIER0.pfn(a.lfn)
    assert compare_with_tier0(a, Tier0Facts(a.lfn, url, True, 10, "0000abcd")) is None
    assert compare_with_tier0(a, Tier0Facts(a.lfn, url, True, 10, None)) is None  # SIZE mode
    mismatches = {
        Reason.ABSENT_AT_TIER0: Tier0Facts(a.lfn, url, False),
        Reason.SIZE_MISMATCH: Tier0Facts(a.lfn, url, True, 11, "0000abcd"),
        Reason.CHECKSUM_MISMATCH: Tier0Facts(a.lfn, url, True, 10, "0000abce"),
    }
    for expected, facts in mismatches.items():
        rejection = compare_with_tier0(a, facts)
        assert rejection is not None and rejection.reason is expected and url in rejection.text


def test_dedupe_within_a_batch() -> None:
    batch = [
        announcement(1),
        announcement(2),
        announcement(1),  # same file again
        announcement(1, checksum="00000002"),  # same LFN, other content
        announcement(2, size=101),  # same LFN and checksum, other size
    ]
    verdicts = dedupe(batch)
    assert [v for v, _ in verdicts] == [
        BatchVerdict.FIRST,
        BatchVerdict.FIRST,
        BatchVerdict.DUPLICATE,
        BatchVerdict.CONFLICT,
        BatchVerdict.CONFLICT,
    ]
    conflict = verdicts[3][1]
    assert conflict is not None and conflict.reason is Reason.CONFLICT and "00000002" in conflict.text
