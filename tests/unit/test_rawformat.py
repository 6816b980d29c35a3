"""The RAW event format: exact sizes, round trips, determinism, and one clear reason per malformed case."""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable
from datetime import date

import numpy as np
import pytest

from rawflow.announcer import Announcer
from rawflow.payloads.rawformat import (
    EVENT,
    HEADER,
    HIT_DTYPE,
    MIN_FILE_SIZE,
    N_PMTS,
    TRAILER,
    RawEvents,
    RawFile,
    RawFormatError,
    decode,
    encode,
    pmt_at,
    pmt_positions,
    synthesize,
)
from rawflow.sites import Site

START_NS = 1_790_000_000 * 1_000_000_000


def make(size: int, *, sequence: int = 1, run: int = 42, stream: str = "Physics") -> bytes:
    data, _truth = synthesize(run=run, stream=stream, sequence=sequence, start_time_ns=START_NS, size=size)
    return data


@pytest.fixture(scope="module")
def good() -> RawFile:
    """A file with enough events for every corruption below."""
    return decode(make(64 * 1024))


@pytest.mark.parametrize(
    "size", [64, 65, 83, 84, 100, 256, 1000, 4096, 5000, 65_536, 256 * 1024, 256 * 1024 + 1, 1 << 20, 16 << 20]
)
def test_files_have_the_exact_size_and_read_back(size: int) -> None:
    data = make(size)
    assert len(data) == size
    raw = decode(data)
    assert raw.header.run == 42 and raw.header.stream == "Physics" and raw.header.sequence == 1
    assert raw.header.start_time_ns == START_NS
    assert raw.header.event_count == raw.events.count
    assert MIN_FILE_SIZE + raw.events.nbytes + raw.header.padding == size
    assert encode(raw.header, raw.events) == data  # the round trip is byte for byte
    if size >= 4096:
        assert raw.events.count > 0 and len(raw.events.hits) > 0
        assert raw.header.padding < size // 2  # mostly events, not padding


def test_a_64_byte_file_is_header_and_trailer_only() -> None:
    raw = decode(make(64))
    assert (raw.events.count, raw.header.padding) == (0, 0)


def test_smaller_than_header_and_trailer_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 64 bytes"):
        make(63)


def test_same_arguments_same_bytes_and_different_files_differ() -> None:
    assert make(5000, sequence=3) == make(5000, sequence=3)
    assert make(5000, sequence=3) != make(5000, sequence=4)
    assert make(300_000, sequence=3) == make(300_000, sequence=3)  # the simulated (not pooled) path too


def test_big_files_hold_realistic_events() -> None:
    raw = decode(make(2 << 20))
    events, hits = raw.events.events, raw.events.hits
    assert raw.events.count > 1000
    assert np.all(np.diff(events["event_number"].astype(np.int64)) == 1)
    assert np.all(np.diff(events["timestamp_ns"]) >= 0)
    rate = (raw.events.count - 1) / ((events["timestamp_ns"][-1] - events["timestamp_ns"][0]) / 1e9)
    assert 800 < rate < 1200  # the 1 kHz trigger
    assert 50 < np.median(events["nhits"]) < 200
    assert hits["pmt"].max() < N_PMTS and np.all(hits["charge"] > 0)
    assert np.all((hits["time"] > 0) & (hits["time"] < 1100))
    # Within an event a PMT is hit once.
    owner = np.repeat(np.arange(raw.events.count), events["nhits"].astype(np.int64))
    assert len(np.unique(owner * N_PMTS + hits["pmt"])) == len(hits)


def test_big_files_can_reuse_the_pool_and_are_still_whole_files() -> None:
    """bench_block's 64 MiB files: pooled events over and over, numbered afresh; exact size, decodable, few
    padding bytes, deterministic."""
    size = 8 << 20  # ~5,600 events of ~1.5 kB
    content, truth = synthesize(run=2, stream="Physics", sequence=7, start_time_ns=0, size=size, reuse_pool=True)
    raw = decode(content)
    assert len(content) == size
    assert raw.events.count == len(truth.energy_mev) > 4096  # more events than the pool holds
    assert raw.header.padding < 4096  # filled with events, not declared padding
    assert np.all(np.diff(raw.events.events["event_number"].astype(np.int64)) == 1)
    again, _ = synthesize(run=2, stream="Physics", sequence=7, start_time_ns=0, size=size, reuse_pool=True)
    assert again == content


def test_pmt_layout_has_17612_pmts_and_maps_points_back_to_them() -> None:
    positions = pmt_positions()
    assert positions.shape == (N_PMTS, 3)
    assert np.allclose(np.linalg.norm(positions, axis=1), 19.5)
    assert np.array_equal(pmt_at(positions), np.arange(N_PMTS))


def test_the_announcer_writes_raw_files_of_the_asked_sizes() -> None:
    tier0 = Site(name="IHEP-EOS", role="disk", url_prefix="root://127.0.0.1:1094//eos/ihep", tier0=True)
    announcer = Announcer(None, tier0, None)  # type: ignore[arg-type]  # make_files touches neither
    files = announcer.make_files(50, day=date(2026, 12, 2), run=7, sizes=(64, 8192), rng=random.Random(5))
    again = announcer.make_files(50, day=date(2026, 12, 2), run=7, sizes=(64, 8192), rng=random.Random(5))
    assert [f.content for f in files] == [f.content for f in again]
    for f in files:
        raw = decode(f.content)
        assert len(f.content) == f.size and 64 <= f.size <= 8192
        assert (raw.header.run, raw.header.stream) == (7, "Physics")
        assert str(raw.header.sequence) in f.file_name
    with pytest.raises(ValueError, match="at least 64 bytes"):
        announcer.make_files(1, sizes=(10, 100))


@pytest.mark.parametrize("size", [64, 4096, 300_000])
def test_the_announcer_damages_a_file_consistently_for_drills(size: int) -> None:
    tier0 = Site(name="IHEP-EOS", role="disk", url_prefix="root://127.0.0.1:1094//eos/ihep", tier0=True)
    [good] = Announcer(None, tier0, None).make_files(1, sizes=(size, size))  # type: ignore[arg-type]
    bad = Announcer.damaged(good)
    assert (bad.lfn, bad.size) == (good.lfn, size // 2)
    assert bad.adler32 == format(zlib.adler32(bad.content), "08x")
    with pytest.raises(RawFormatError, match=r"^truncated"):
        decode(bad.content)


# --- malformed files: one line each, saying what is wrong -------------------------------------------------


def with_events(raw: RawFile, **changes: Callable[[np.ndarray, np.ndarray], None]) -> bytes:
    events, hits = raw.events.events.copy(), raw.events.hits.copy()
    for change in changes.values():
        change(events, hits)
    return encode(raw.header, RawEvents(events, hits))


def patch(data: bytes, offset: int, fmt: str, value: object) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def set_field(array: np.ndarray, field: str, index: int, value: object) -> None:
    array[field][index] = value


CASES: list[tuple[str, Callable[[RawFile, bytes], bytes], str]] = [
    ("bad magic", lambda raw, data: b"ROOT" + data[4:], r"^bad magic b'ROOT' \(expected b'JRAW'\)"),
    ("not a raw file at all", lambda raw, data: b"hello world\n", r"^bad magic b'hell'"),
    ("shorter than a header", lambda raw, data: data[:40], r"^truncated file: 40 bytes"),
    ("empty", lambda raw, data: b"", r"^truncated file: 0 bytes"),
    ("version", lambda raw, data: patch(data, 4, "<H", 9), r"^unsupported format version 9"),
    ("header size", lambda raw, data: patch(data, 6, "<H", 40), r"^impossible header size 40"),
    ("stream", lambda raw, data: patch(data, 32, "<16s", b"\xffbad"), r"^bad stream name"),
    ("start time", lambda raw, data: patch(data, 16, "<q", -5), r"^impossible start time -5"),
    ("padding", lambda raw, data: patch(data, 28, "<I", 1 << 30), r"^impossible padding of 1073741824 bytes"),
    ("cut in an event", lambda raw, data: data[: len(data) // 2], r"^truncated (file|event)"),
    ("cut in the trailer", lambda raw, data: data[:-5], r"^(truncated|event count mismatch|bad trailer)"),
    (
        "header count too small",
        lambda raw, data: patch(data, 24, "<I", raw.header.event_count - 1),
        r"^event count mismatch: \d+ bytes of events after the",
    ),
    (
        "header count too large",
        lambda raw, data: patch(data, 24, "<I", raw.header.event_count + 1),
        r"^truncated event",
    ),
    (
        "trailer count",
        lambda raw, data: patch(data, len(data) - TRAILER.size + 4, "<I", raw.header.event_count + 1),
        r"^event count mismatch: header declares \d+ events, trailer",
    ),
    (
        "trailer hits",
        lambda raw, data: patch(data, len(data) - TRAILER.size + 8, "<Q", 1),
        r"^hit count mismatch",
    ),
    ("trailer magic", lambda raw, data: data[:-16] + b"XXXX" + data[-12:], r"^bad trailer magic b'XXXX'"),
    (
        "dirty padding",
        lambda raw, data: data[: -TRAILER.size - 1] + b"\x01" + data[-TRAILER.size :],
        r"^padding of \d+ bytes at byte \d+ is not zero",
    ),
    (
        "too many hits",
        lambda raw, data: patch(data, HEADER.size + 16, "<I", N_PMTS + 1),
        r"^impossible event 0 at byte 48: 17613 hits",
    ),
    (
        "pmt id",
        lambda raw, data: with_events(raw, c=lambda e, h: set_field(h, "pmt", 3, N_PMTS)),
        r"^impossible event 0: PMT id 17612 out of range",
    ),
    (
        "negative charge",
        lambda raw, data: with_events(raw, c=lambda e, h: set_field(h, "charge", 0, -1.0)),
        r"^impossible event 0: impossible hit charge -1",
    ),
    (
        "nan time",
        lambda raw, data: with_events(raw, c=lambda e, h: set_field(h, "time", 0, np.nan)),
        r"^impossible event 0: hit time nan ns is not finite",
    ),
    (
        "trigger type",
        lambda raw, data: with_events(raw, c=lambda e, h: set_field(e, "trigger_type", 2, 77)),
        r"^impossible event 2: unknown trigger type 77",
    ),
    (
        "flags",
        lambda raw, data: with_events(raw, c=lambda e, h: set_field(e, "flags", 1, 1)),
        r"^impossible event 1: reserved flags 1",
    ),
    (
        "event order",
        lambda raw, data: with_events(raw, c=lambda e, h: set_field(e, "event_number", 2, 0)),
        r"^impossible event 2: event number 0 not after 1",
    ),
    (
        "timestamp",
        lambda raw, data: with_events(raw, c=lambda e, h: set_field(e, "timestamp_ns", 0, 5)),
        r"^impossible event 0: timestamp 5 ns before the start",
    ),
]


@pytest.mark.parametrize(("case", "corrupt", "reason"), CASES, ids=[c[0] for c in CASES])
def test_malformed_files_fail_with_one_line(
    good: RawFile, case: str, corrupt: Callable[[RawFile, bytes], bytes], reason: str
) -> None:
    data = encode(good.header, good.events)
    with pytest.raises(RawFormatError, match=reason) as caught:
        decode(corrupt(good, data))
    assert caught.value.reason == str(caught.value)
    assert "\n" not in caught.value.reason and len(caught.value.reason) < 200


def test_the_layout_is_what_the_document_says() -> None:
    assert (HEADER.size, EVENT.size, HIT_DTYPE.itemsize, TRAILER.size, MIN_FILE_SIZE) == (48, 20, 12, 16, 64)
    raw = decode(make(4096))
    data = encode(raw.header, raw.events)
    assert data[:4] == b"JRAW" and data[-16:-12] == b"JEND"
    _magic, version, header_size, run, sequence, start, count, padding, stream = HEADER.unpack_from(data)
    assert (version, header_size, run, sequence, start) == (1, 48, 42, 1, START_NS)
    assert (count, padding, stream.rstrip(b"\0")) == (raw.events.count, raw.header.padding, b"Physics")
    number, stamp, trigger, flags, nhits = EVENT.unpack_from(data, HEADER.size)
    first = raw.events.events[0]
    assert (number, stamp, trigger, flags, nhits) == tuple(first.tolist())
    pmt, time, charge = struct.unpack_from("<Iff", data, HEADER.size + EVENT.size)
    assert (pmt, time, charge) == tuple(raw.events.hits[0].tolist())
