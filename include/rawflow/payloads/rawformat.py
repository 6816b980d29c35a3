"""The RAW event format (``docs/raw-format.md``): reader, writer and a deterministic event generator.

A RAW file is a 48-byte file header, the events, zero padding and a 16-byte trailer, all little-endian::

    header   magic "JRAW", version, header size, run, file sequence, start time (ns), event count,
             padding length, stream (16 bytes, ASCII, NUL-padded)
    event    event number (u32), timestamp (i64 ns since the epoch), trigger type (u16), flags (u16, 0),
             number of hits (u32), then per hit: PMT id (u32), time (f32 ns), charge (f32 p.e.)
    padding  ``padding`` zero bytes (declared in the header) so that a file has an exact size
    trailer  magic "JEND", event count (u32), total hits (u64): a truncated file has no trailer

Standalone: imports only the standard library and numpy (the payloads run on the pool's Python).
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

MAGIC = b"JRAW"
TRAILER_MAGIC = b"JEND"
FORMAT_VERSION = 1
HEADER = struct.Struct("<4sHHIIqII16s")
EVENT = struct.Struct("<IqHHI")
TRAILER = struct.Struct("<4sIQ")
HIT_DTYPE = np.dtype([("pmt", "<u4"), ("time", "<f4"), ("charge", "<f4")])
EVENT_DTYPE = np.dtype(
    [("event_number", "<u4"), ("timestamp_ns", "<i8"), ("trigger_type", "<u2"), ("flags", "<u2"), ("nhits", "<u4")]
)
MIN_FILE_SIZE = HEADER.size + TRAILER.size
STREAM_BYTES = 16

# The detector: a 17.7 m liquid-scintillator sphere seen by 17,612 PMTs on a 19.5 m sphere.
N_PMTS = 17_612
PMT_RADIUS_M = 19.5
LS_RADIUS_M = 17.7
LIGHT_SPEED_LS_M_PER_NS = 0.2998 / 1.49
READOUT_WINDOW_NS = 1000.0
TRIGGER_MULTIPLICITY = 1
TRIGGER_PERIODIC = 2
TRIGGER_TYPES = frozenset({TRIGGER_MULTIPLICITY, TRIGGER_PERIODIC})
MAX_CHARGE_PE = 1.0e6

assert HEADER.size == 48 and EVENT.size == EVENT_DTYPE.itemsize == 20 and TRAILER.size == 16
assert HIT_DTYPE.itemsize == 12


class RawFormatError(ValueError):
    """A malformed RAW file; ``reason`` is one line saying what is wrong and where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RawHeader:
    run: int
    stream: str
    sequence: int
    start_time_ns: int
    event_count: int
    padding: int = 0
    version: int = FORMAT_VERSION


@dataclass(frozen=True, slots=True)
class RawEvents:
    """Events as columns: one row per event in ``events`` (EVENT_DTYPE), all hits in ``hits`` (HIT_DTYPE),
    event ``i`` owning ``hits[offsets[i]:offsets[i + 1]]``."""

    events: npt.NDArray[Any]
    hits: npt.NDArray[Any]

    @property
    def count(self) -> int:
        return len(self.events)

    @property
    def offsets(self) -> npt.NDArray[np.int64]:
        out = np.zeros(len(self.events) + 1, dtype=np.int64)
        np.cumsum(self.events["nhits"], out=out[1:])
        return out

    @property
    def nbytes(self) -> int:
        return int(EVENT.size * len(self.events) + HIT_DTYPE.itemsize * len(self.hits))


@dataclass(frozen=True, slots=True)
class RawFile:
    header: RawHeader
    events: RawEvents


# --- writing -------------------------------------------------------------------------------------------------


def encode(header: RawHeader, events: RawEvents) -> bytes:
    """The bytes of a RAW file; ``header.event_count`` and ``header.padding`` are taken as given."""
    stream = header.stream.encode("ascii")
    if not stream or len(stream) > STREAM_BYTES:
        raise ValueError(f"stream name must be 1 to {STREAM_BYTES} ASCII characters: {header.stream!r}")
    event_rows = np.ascontiguousarray(events.events, dtype=EVENT_DTYPE)
    hits = np.ascontiguousarray(events.hits, dtype=HIT_DTYPE)
    head = HEADER.pack(
        MAGIC,
        header.version,
        HEADER.size,
        header.run,
        header.sequence,
        header.start_time_ns,
        header.event_count,
        header.padding,
        stream,
    )
    row_bytes = event_rows.tobytes()
    hit_bytes = hits.tobytes()
    offsets = (events.offsets * HIT_DTYPE.itemsize).tolist()
    parts = [head]
    for i in range(len(event_rows)):
        parts.append(row_bytes[i * EVENT.size : (i + 1) * EVENT.size])
        parts.append(hit_bytes[offsets[i] : offsets[i + 1]])
    parts.append(bytes(header.padding))
    parts.append(TRAILER.pack(TRAILER_MAGIC, header.event_count, len(hits)))
    return b"".join(parts)


# --- reading -------------------------------------------------------------------------------------------------


def read_header(data: bytes) -> RawHeader:
    """The file header, checked; raises RawFormatError."""
    if len(data) < MIN_FILE_SIZE:
        if len(data) >= 4 and data[:4] != MAGIC:
            raise RawFormatError(f"bad magic {bytes(data[:4])!r} (expected {MAGIC!r}): not a RAW file")
        raise RawFormatError(f"truncated file: {len(data)} bytes, less than the {MIN_FILE_SIZE} of header and trailer")
    magic, version, header_size, run, sequence, start_ns, count, padding, stream_raw = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise RawFormatError(f"bad magic {magic!r} (expected {MAGIC!r}): not a RAW file")
    if version != FORMAT_VERSION:
        raise RawFormatError(f"unsupported format version {version} (this reader knows {FORMAT_VERSION})")
    if header_size != HEADER.size:
        raise RawFormatError(f"impossible header size {header_size} (version {version} has {HEADER.size})")
    stream_bytes = stream_raw.rstrip(b"\0")
    if not stream_bytes or b"\0" in stream_bytes or not all(0x21 <= b < 0x7F for b in stream_bytes):
        raise RawFormatError(f"bad stream name {stream_raw!r} in the header")
    if start_ns < 0:
        raise RawFormatError(f"impossible start time {start_ns} ns")
    if padding > len(data) - MIN_FILE_SIZE:
        raise RawFormatError(f"impossible padding of {padding} bytes in a file of {len(data)} bytes")
    return RawHeader(run, stream_bytes.decode("ascii"), sequence, start_ns, count, padding, version)


def decode(data: bytes) -> RawFile:
    """Parse and check a whole RAW file; raises RawFormatError with a one-line reason."""
    view = memoryview(data)
    header = read_header(data)
    size = len(data)
    tail_magic, tail_count, tail_hits = TRAILER.unpack_from(data, size - TRAILER.size)
    events_end = size - TRAILER.size - header.padding
    max_events = (events_end - HEADER.size) // EVENT.size
    if header.event_count > max_events:
        raise RawFormatError(
            f"truncated file: header declares {header.event_count} events, {size} bytes hold at most {max_events}"
        )
    rows = np.empty(header.event_count, dtype=EVENT_DTYPE)
    hit_ranges: list[tuple[int, int]] = []
    position = HEADER.size
    for index in range(header.event_count):
        if position + EVENT.size > events_end:
            raise RawFormatError(f"truncated event {index} at byte {position}: its header runs past the events")
        row = np.frombuffer(view[position : position + EVENT.size], dtype=EVENT_DTYPE)[0]
        nhits = int(row["nhits"])
        if nhits > N_PMTS:
            raise RawFormatError(f"impossible event {index} at byte {position}: {nhits} hits, only {N_PMTS} PMTs")
        end = position + EVENT.size + HIT_DTYPE.itemsize * nhits
        if end > events_end:
            raise RawFormatError(
                f"truncated event {index} at byte {position}: {nhits} hits need {end - position} bytes, "
                f"{max(events_end - position, 0)} left"
            )
        rows[index] = row
        hit_ranges.append((position + EVENT.size, end))
        position = end
    if position != events_end:
        raise RawFormatError(
            f"event count mismatch: {events_end - position} bytes of events after the {header.event_count} "
            "declared in the header"
        )
    if tail_magic != TRAILER_MAGIC:
        raise RawFormatError(f"bad trailer magic {tail_magic!r} (expected {TRAILER_MAGIC!r}): file truncated")
    if tail_count != header.event_count:
        raise RawFormatError(f"event count mismatch: header declares {header.event_count} events, trailer {tail_count}")
    if any(view[events_end : size - TRAILER.size]):
        raise RawFormatError(f"padding of {header.padding} bytes at byte {events_end} is not zero")
    hits = (
        np.frombuffer(b"".join(view[a:b] for a, b in hit_ranges), dtype=HIT_DTYPE)
        if hit_ranges
        else np.empty(0, dtype=HIT_DTYPE)
    )
    if tail_hits != len(hits):
        raise RawFormatError(f"hit count mismatch: events hold {len(hits)} hits, trailer declares {tail_hits}")
    _check_values(header, rows, hits)
    return RawFile(header, RawEvents(rows, hits))


def _check_values(header: RawHeader, rows: npt.NDArray[Any], hits: npt.NDArray[Any]) -> None:
    if len(rows):
        numbers = rows["event_number"].astype(np.int64)
        bad = np.flatnonzero(np.diff(numbers) <= 0)
        if len(bad):
            i = int(bad[0]) + 1
            raise RawFormatError(f"impossible event {i}: event number {numbers[i]} not after {numbers[i - 1]}")
        stamps = rows["timestamp_ns"]
        early = np.flatnonzero((stamps < header.start_time_ns) | (np.diff(stamps, prepend=stamps[0]) < 0))
        if len(early):
            i = int(early[0])
            raise RawFormatError(f"impossible event {i}: timestamp {stamps[i]} ns before the start or the event before")
        unknown = np.flatnonzero(~np.isin(rows["trigger_type"], sorted(TRIGGER_TYPES)))
        if len(unknown):
            i = int(unknown[0])
            raise RawFormatError(f"impossible event {i}: unknown trigger type {rows['trigger_type'][i]}")
        flagged = np.flatnonzero(rows["flags"] != 0)
        if len(flagged):
            i = int(flagged[0])
            raise RawFormatError(f"impossible event {i}: reserved flags {rows['flags'][i]} are not zero")
    if len(hits):
        owner = np.repeat(np.arange(len(rows)), rows["nhits"].astype(np.int64))
        checks = (
            (hits["pmt"] >= N_PMTS, "PMT id {value} out of range (0..{limit})", "pmt"),
            (~np.isfinite(hits["time"]), "hit time {value} ns is not finite", "time"),
            (
                ~np.isfinite(hits["charge"]) | (hits["charge"] < 0) | (hits["charge"] > MAX_CHARGE_PE),
                "impossible hit charge {value} p.e.",
                "charge",
            ),
        )
        for mask, message, field in checks:
            where = np.flatnonzero(mask)
            if len(where):
                h = int(where[0])
                text = message.format(value=hits[field][h], limit=N_PMTS - 1)
                raise RawFormatError(f"impossible event {owner[h]}: {text}")


# --- the event generator -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Truth:
    """What the generator put into each event (for tests and demos; never stored in the RAW file)."""

    vertex_m: npt.NDArray[np.float64]  # (n, 3)
    energy_mev: npt.NDArray[np.float64]


@lru_cache(maxsize=1)
def pmt_rings() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The PMT layout: rings of equal polar angle, PMTs spread evenly in each; (theta, count, first id) per ring."""
    n_rings = round(math.pi / math.sqrt(4 * math.pi / N_PMTS))
    theta = (np.arange(n_rings) + 0.5) * math.pi / n_rings
    share = np.sin(theta) / np.sin(theta).sum() * N_PMTS
    count = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - count), kind="stable")
    count[order[: N_PMTS - int(count.sum())]] += 1
    first = np.concatenate(([0], np.cumsum(count)[:-1]))
    return theta, count, first


@lru_cache(maxsize=1)
def pmt_positions() -> npt.NDArray[np.float64]:
    """(N_PMTS, 3) positions in metres, indexed by PMT id."""
    theta, count, _first = pmt_rings()
    ring = np.repeat(np.arange(len(count)), count)
    index_in_ring = np.arange(N_PMTS) - np.repeat(np.cumsum(count) - count, count)
    phi = 2 * math.pi * (index_in_ring + 0.5) / count[ring]
    t = theta[ring]
    return PMT_RADIUS_M * np.stack([np.sin(t) * np.cos(phi), np.sin(t) * np.sin(phi), np.cos(t)], axis=1)


def pmt_at(points: npt.NDArray[np.float64]) -> npt.NDArray[np.uint32]:
    """The id of the PMT covering each point of the PMT sphere."""
    theta, count, first = pmt_rings()
    polar = np.arccos(np.clip(points[:, 2] / PMT_RADIUS_M, -1.0, 1.0))
    ring = np.minimum((polar / math.pi * len(theta)).astype(np.int64), len(theta) - 1)
    azimuth = np.mod(np.arctan2(points[:, 1], points[:, 0]), 2 * math.pi)
    index = np.minimum((azimuth / (2 * math.pi) * count[ring]).astype(np.int64), count[ring] - 1)
    return (first[ring] + index).astype(np.uint32)


PE_PER_MEV = 60.0  # scaled-down light yield, so a 4 KiB file still holds whole events
EVENT_RATE_HZ = 1000.0
DARK_HITS_PER_EVENT = 3.0
PERIODIC_FRACTION = 0.01


def _seed(run: int, stream: str, sequence: int, start_time_ns: int, size: int) -> np.random.Generator:
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([run, zlib.crc32(stream.encode()), sequence, start_time_ns, size]))
    )


@dataclass(frozen=True, slots=True)
class _Batch:
    """Simulated events: hits per event, trigger types, the hits grouped by event, and the truth."""

    nhits: npt.NDArray[np.int64]
    trigger: npt.NDArray[np.uint8]
    hits: npt.NDArray[Any]
    truth: Truth
    offsets: npt.NDArray[np.int64]  # event i's hits are hits[offsets[i]:offsets[i + 1]]
    cost: npt.NDArray[np.int64]  # bytes each event takes in a file


def _batch(
    nhits: npt.NDArray[np.int64], trigger: npt.NDArray[np.uint8], hits: npt.NDArray[Any], truth: Truth
) -> _Batch:
    offsets = np.concatenate(([0], np.cumsum(nhits))).astype(np.int64)
    return _Batch(nhits, trigger, hits, truth, offsets, EVENT.size + HIT_DTYPE.itemsize * nhits)


def _simulate_events(rng: np.random.Generator, n: int) -> _Batch:
    periodic = rng.random(n) < PERIODIC_FRACTION
    # Energy: a falling radioactivity spectrum above threshold plus the 2.2 MeV neutron-capture line.
    capture = rng.random(n) < 0.15
    energy = np.where(capture, rng.normal(2.22, 0.05, n), 0.7 + rng.exponential(1.3, n))
    energy = np.where(periodic, 0.0, energy)
    direction = rng.normal(size=(n, 3))
    direction /= np.sqrt((direction * direction).sum(axis=1))[:, None]
    vertex = direction * (LS_RADIUS_M * rng.random(n) ** (1 / 3))[:, None]
    photons = rng.poisson(energy * PE_PER_MEV)
    owner = np.repeat(np.arange(n), photons)
    # Photo-electrons go out isotropically from the vertex; each lands on the PMT sphere.
    u = rng.normal(size=(len(owner), 3))
    u /= np.sqrt((u * u).sum(axis=1))[:, None]
    v = vertex[owner]
    vu = (v * u).sum(axis=1)
    path = -vu + np.sqrt(vu * vu - (v * v).sum(axis=1) + PMT_RADIUS_M**2)
    pmt = pmt_at(v + path[:, None] * u).astype(np.int64)
    arrival = 100.0 + path / LIGHT_SPEED_LS_M_PER_NS + rng.normal(0.0, 1.5, len(owner))
    # Dark noise: a few random PMTs per readout window, at random times.
    dark = rng.poisson(DARK_HITS_PER_EVENT, n)
    dark_owner = np.repeat(np.arange(n), dark)
    owner = np.concatenate([owner, dark_owner])
    pmt = np.concatenate([pmt, rng.integers(0, N_PMTS, len(dark_owner))])
    arrival = np.concatenate([arrival, rng.uniform(0.0, READOUT_WINDOW_NS, len(dark_owner))])
    # One hit per fired PMT: its first photon's time, charge = photo-electrons smeared by the PMT's resolution.
    key = owner * N_PMTS + pmt
    order = np.argsort(key, kind="stable")
    key, arrival = key[order], arrival[order]
    first = np.flatnonzero(np.diff(key, prepend=-1) != 0)
    npe = np.diff(np.append(first, len(key)))
    hits = np.empty(len(first), dtype=HIT_DTYPE)
    hits["pmt"] = key[first] % N_PMTS
    hits["time"] = np.minimum.reduceat(arrival, first) if len(first) else []
    hits["charge"] = np.maximum(rng.normal(npe, 0.3 * np.sqrt(npe)), 0.05)
    per_event = np.bincount(key[first] // N_PMTS, minlength=n).astype(np.int64)
    trigger = np.where(periodic, TRIGGER_PERIODIC, TRIGGER_MULTIPLICITY).astype(np.uint8)
    return _batch(per_event, trigger, hits, Truth(vertex, energy))


POOL_EVENTS = 4096
POOL_MAX_FILE_SIZE = 256 * 1024
MAX_FILL_TRIES = 256


@lru_cache(maxsize=1)
def _event_pool() -> _Batch:
    """Events simulated once per process; small files take theirs from here (14,400 small files in seconds)."""
    return _simulate_events(np.random.Generator(np.random.PCG64(20_260_101)), POOL_EVENTS)


def _select(batch: _Batch, order: npt.NDArray[np.int64], budget: int) -> npt.NDArray[np.int64]:
    """Events of ``batch`` taken in ``order`` while they fit into ``budget`` bytes; then, among the next
    MAX_FILL_TRIES events, those that still fit, as a DAQ closing a file fills its last block."""
    cost = batch.cost[order]
    total = np.cumsum(cost)
    prefix = int(np.searchsorted(total, budget, side="right"))
    left = budget - (int(total[prefix - 1]) if prefix else 0)
    window = cost[prefix : prefix + MAX_FILL_TRIES]
    extra: list[int] = []
    position = 0
    while left >= EVENT.size:
        fitting = np.flatnonzero(window[position:] <= left)
        if not len(fitting):
            break
        position += int(fitting[0])
        extra.append(prefix + position)
        left -= int(window[position])
        position += 1
    return np.concatenate((order[:prefix], order[extra])).astype(np.int64)


def synthesize(
    *,
    run: int,
    stream: str,
    sequence: int,
    start_time_ns: int,
    size: int,
    first_event: int = 0,
    reuse_pool: bool = False,
) -> tuple[bytes, Truth]:
    """A RAW file of exactly ``size`` bytes: whole events while they fit, the rest declared zero padding.

    Deterministic: the same arguments give the same bytes. Files up to POOL_MAX_FILE_SIZE take consecutive
    events from a pool simulated once per process (from a random place in it); larger ones are simulated,
    unless ``reuse_pool``: then they take the pool's events over and over (numbered and timed afresh), for
    transfer benchmarks: a simulated 64 MiB file takes ~25 s on one core, a pooled one well under a second.
    """
    if size < MIN_FILE_SIZE:
        raise ValueError(f"a RAW file has at least {MIN_FILE_SIZE} bytes (header and trailer), asked for {size}")
    rng = _seed(run, stream, sequence, start_time_ns, size)
    budget = size - MIN_FILE_SIZE
    if size <= POOL_MAX_FILE_SIZE or reuse_pool:
        batch = _event_pool()
        # Consecutive pool events from a random place; never more than can fit (the smallest event is 20 bytes).
        length = budget // EVENT.size + MAX_FILL_TRIES
        if not reuse_pool:
            length = min(len(batch.nhits), length)
        order = (int(rng.integers(len(batch.nhits))) + np.arange(length)) % len(batch.nhits)
    else:
        batch = _simulate_events(rng, int(budget / 1400) + 64)  # the mean event is ≈ 1.5 kB
        order = np.arange(len(batch.nhits))
    chosen = _select(batch, order, budget)
    n = len(chosen)
    nhits = batch.nhits[chosen]
    starts = batch.offsets[chosen]
    before = np.concatenate(([0], np.cumsum(nhits)[:-1])) if n else np.empty(0, dtype=np.int64)
    hit_index = np.repeat(starts - before, nhits) + np.arange(int(nhits.sum()))
    rows = np.zeros(n, dtype=EVENT_DTYPE)
    rows["event_number"] = first_event + np.arange(n)
    rows["timestamp_ns"] = start_time_ns + np.cumsum(rng.exponential(1e9 / EVENT_RATE_HZ, n)).astype(np.int64)
    rows["trigger_type"] = batch.trigger[chosen]
    rows["nhits"] = nhits
    events = RawEvents(rows, batch.hits[hit_index])
    header = RawHeader(run, stream, sequence, start_time_ns, n, budget - events.nbytes)
    truth = Truth(batch.truth.vertex_m[chosen], batch.truth.energy_mev[chosen])
    return encode(header, events), truth
