"""What the Monte Carlo payloads share: the file layout, the content checksum, the electronics' calibration
constants and a checked reader.

The MC chain (ProdSys's "detsim → elecsim → cal → rec") writes one ROOT file per step, each laid out like
RTRAW: a TTree ``header`` (one entry: run, sequence, start_time_ns, event_count, format_version, seed,
checksum), a TObjString ``stream``, a TObjString ``provenance`` (JSON: payload, version, input, parameters)
and the step's event tree:

- DETSIM (``detsim``): tree ``truth`` — event_number, timestamp_ns, energy_mev, x/y/z (m), and the jagged
  photo-electrons ``pe`` (counter ``npe``, ``pe_pmt``, ``pe_time`` in ns after the interaction);
- ELECSIM (``elecsim``): tree ``readout`` — event_number, timestamp_ns, trigger_type, and the jagged channels
  ``ch`` (counter ``nch``, ``ch_pmt``, ``ch_adc`` counts, ``ch_tdc`` counts);
- CALIB (``cal``): the RTRAW layout exactly (tree ``events``: event_number, timestamp_ns, trigger_type, jagged
  ``hit``: ``nhit``, ``hit_pmt``, ``hit_time`` ns, ``hit_charge`` p.e.), so ``rec`` reconstructs it as it
  reconstructs data.

``checksum`` is the adler32 of the event columns (:func:`content_checksum`, fixed little-endian types in a
fixed order): a reader recomputes it, so a file whose events were altered but that ROOT still reads is
refused, like a RAW file whose trailer does not match. The event number carries through every step, so a
reconstructed event can be matched with its generated truth.

Standalone like every payload: the standard library, numpy, uproot and this package only.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import numpy.typing as npt

from rawflow.payloads.errors import InputError, ParameterError
from rawflow.payloads.rawformat import N_PMTS
from rawflow.payloads.rootio import open_root, reading

FORMAT_VERSION = 1
HEADER_TREE = "header"
TRUTH_TREE = "truth"  # DETSIM
READOUT_TREE = "readout"  # ELECSIM
EVENTS_TREE = "events"  # CALIB (= RTRAW's)
MC_HEADER = ("run", "sequence", "start_time_ns", "event_count", "format_version", "seed", "checksum")

# The electronics (elecsim) and its calibration (cal): ADC counts per photo-electron and a cable delay per PMT,
# an ADC pedestal, TDC counts of 0.25 ns and a readout window of 1 µs with the interaction 100 ns into it.
TDC_NS = 0.25
ADC_PEDESTAL = 50.0
ADC_NOISE = 2.0
ADC_MAX = 65_535
TRIGGER_OFFSET_NS = 100.0
TTS_NS = 1.5  # PMT transit-time spread (sigma)
SPE_RESOLUTION = 0.3  # single photo-electron charge resolution (sigma / mean)
CALIBRATION_SEED = 20_260_401


@dataclass(frozen=True, slots=True)
class Calibration:
    """Per PMT: gain (ADC counts per photo-electron) and delay (ns), the same table for elecsim and cal."""

    gain: npt.NDArray[np.float64]
    delay_ns: npt.NDArray[np.float64]


@lru_cache(maxsize=1)
def calibration() -> Calibration:
    """The detector's calibration constants (a fixed table: the "calibration database" of this detector)."""
    rng = np.random.Generator(np.random.PCG64(CALIBRATION_SEED))
    gain = np.clip(rng.normal(100.0, 8.0, N_PMTS), 60.0, 140.0)
    delay = 20.0 + rng.uniform(0.0, 10.0, N_PMTS)
    return Calibration(gain, delay)


def content_checksum(columns: Sequence[tuple[npt.ArrayLike, str]]) -> int:
    """adler32 of the columns' bytes, each as the given little-endian type, in order."""
    value = 1
    for array, dtype in columns:
        value = zlib.adler32(np.ascontiguousarray(array, dtype=dtype).tobytes(), value)
    return value & 0xFFFFFFFF


def integer_parameter(
    parameters: Mapping[str, str], name: str, *, minimum: int, maximum: int, default: int | None
) -> int:
    """``parameters[name]`` as an integer in [minimum, maximum] (ParameterError otherwise)."""
    if name not in parameters:
        if default is None:
            raise ParameterError(f"parameter {name} is required (--param {name}=N)")
        return default
    text = parameters[name]
    try:
        value = int(text)
    except ValueError:
        raise ParameterError(f"parameter {name}={text!r} is not an integer") from None
    if not minimum <= value <= maximum:
        raise ParameterError(f"parameter {name}={value} is out of range ({minimum}..{maximum})")
    return value


def float_parameter(
    parameters: Mapping[str, str], name: str, *, minimum: float, maximum: float, default: float
) -> float:
    """``parameters[name]`` as a finite number in [minimum, maximum] (ParameterError otherwise)."""
    if name not in parameters:
        return default
    text = parameters[name]
    try:
        value = float(text)
    except ValueError:
        raise ParameterError(f"parameter {name}={text!r} is not a number") from None
    if not (np.isfinite(value) and minimum <= value <= maximum):
        raise ParameterError(f"parameter {name}={value} is out of range ({minimum:g}..{maximum:g})")
    return value


def mc_header(*, run: int, sequence: int, start_time_ns: int, events: int, seed: int, checksum: int) -> dict[str, Any]:
    """The ``header`` tree's one entry (CALIB adds RTRAW's ``padding``)."""
    return {
        "run": np.array([run], dtype=np.uint32),
        "sequence": np.array([sequence], dtype=np.uint32),
        "start_time_ns": np.array([start_time_ns], dtype=np.int64),
        "event_count": np.array([events], dtype=np.uint64),
        "format_version": np.array([FORMAT_VERSION], dtype=np.uint16),
        "seed": np.array([seed], dtype=np.uint64),
        "checksum": np.array([checksum], dtype=np.uint32),
    }


@dataclass(frozen=True, slots=True)
class McFile:
    """A checked MC file: its header values, stream, provenance and event columns (jagged ones flat, with
    their per-event counter)."""

    header: dict[str, int]
    stream: str
    provenance: dict[str, Any]
    columns: dict[str, npt.NDArray[Any]]

    @property
    def events(self) -> int:
        return int(self.header["event_count"])


def read_mc(
    path: Path,
    *,
    kind: str,
    tree: str,
    scalars: Sequence[str],
    counter: str,
    jagged: Sequence[str],
    checksum_of: Any,
) -> McFile:
    """Read an MC file of ``kind`` (DETSIM, ELECSIM, CALIB) and check it: the trees are there, the format
    version is known, the header's event count is the tree's, the counters add up to the stored values, and
    ``checksum_of(columns)`` is the header's checksum. Every problem is one InputError line."""
    with reading():
        return _read_mc(path, kind, tree, scalars, counter, jagged, checksum_of)


def _read_mc(
    path: Path,
    kind: str,
    tree: str,
    scalars: Sequence[str],
    counter: str,
    jagged: Sequence[str],
    checksum_of: Any,
) -> McFile:
    what = f"{'an' if kind[0] in 'AEIOU' else 'a'} {kind} file"
    with open_root(path, (HEADER_TREE,)) as file:
        if tree not in file:
            raise InputError(f"not {what}: no {tree!r} tree")
        head = file[HEADER_TREE]
        missing = [name for name in MC_HEADER if name not in head]
        if missing:
            raise InputError(f"not {what}: the header has no {', '.join(missing)}")
        header = {name: int(head[name].array(library="np")[0]) for name in MC_HEADER}
        if header["format_version"] != FORMAT_VERSION:
            raise InputError(
                f"unsupported {kind} format version {header['format_version']} (this reader knows {FORMAT_VERSION})"
            )
        stream = str(file["stream"]) if "stream" in file else ""
        try:
            provenance = json.loads(str(file["provenance"])) if "provenance" in file else {}
        except ValueError:
            provenance = {}
        events = file[tree]
        entries = int(events.num_entries)
        if entries != header["event_count"]:
            raise InputError(
                f"event count mismatch: header declares {header['event_count']} events, the {tree} tree has {entries}"
            )
        absent = [name for name in (*scalars, counter, *jagged) if name not in events]
        if absent:
            raise InputError(f"not {what}: the {tree} tree has no {', '.join(absent)}")
        columns = {name: events[name].array(library="np") for name in scalars}
        columns[counter] = events[counter].array(library="np").astype(np.int64)
        for name in jagged:
            columns[name] = ak.to_numpy(ak.flatten(events[name].array(library="ak")))
    stored = {len(columns[name]) for name in jagged}
    total = int(columns[counter].sum()) if entries else 0
    if stored != {total} and not (total == 0 and stored <= {0}):
        raise InputError(f"hit count mismatch: counters say {total}, {min(stored)} stored")
    actual = checksum_of(columns)
    if actual != header["checksum"]:
        raise InputError(f"checksum mismatch: header says {header['checksum']:08x}, the events give {actual:08x}")
    return McFile(header, stream, provenance if isinstance(provenance, dict) else {}, columns)


def check_pmts(pmt: npt.NDArray[Any]) -> None:
    if len(pmt) and int(pmt.max()) >= N_PMTS:
        raise InputError(f"PMT id {int(pmt.max())} out of range (0..{N_PMTS - 1})")


def derived_seed(seed: int, step: str) -> np.random.Generator:
    """A step's random numbers, from the generator's seed (carried in every header) and the step's name: a job
    run again over the same input writes the same bytes."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(step.encode())])))


__all__ = [
    "ADC_MAX",
    "ADC_PEDESTAL",
    "EVENTS_TREE",
    "FORMAT_VERSION",
    "HEADER_TREE",
    "READOUT_TREE",
    "TDC_NS",
    "TRUTH_TREE",
    "Calibration",
    "McFile",
    "ParameterError",
    "calibration",
    "content_checksum",
    "mc_header",
    "read_mc",
]
