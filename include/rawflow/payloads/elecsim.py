"""elecsim: DETSIM → ELECSIM, the electronics readout of simulated events.

Per event, one readout window (1 µs, the interaction TRIGGER_OFFSET_NS into it): each photo-electron gets the
PMT's transit-time spread; a few dark-noise photo-electrons per window land on random PMTs at random times;
each fired PMT gives one channel: its first photo-electron's time, digitised with the PMT's cable delay in
TDC counts of TDC_NS, and its charge (photo-electrons smeared by the single-p.e. resolution) times the PMT's
gain on an ADC pedestal with noise, saturating at ADC_MAX. Every simulated event is read out (one readout per
event: the event numbers and counts carry through).

Random numbers come from the DETSIM header's seed and this step's name: running the job again over the same
DETSIM file writes the same bytes. Parameters (``--param``) are recorded in the provenance.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rawflow.payloads import PAYLOAD_VERSION
from rawflow.payloads.detsim import read_detsim
from rawflow.payloads.errors import OutputCheckError, checked
from rawflow.payloads.mc import (
    ADC_MAX,
    ADC_NOISE,
    ADC_PEDESTAL,
    HEADER_TREE,
    READOUT_TREE,
    SPE_RESOLUTION,
    TDC_NS,
    TRIGGER_OFFSET_NS,
    TTS_NS,
    McFile,
    calibration,
    check_pmts,
    content_checksum,
    derived_seed,
    mc_header,
    read_mc,
)
from rawflow.payloads.raw2rtraw import jagged
from rawflow.payloads.rawformat import DARK_HITS_PER_EVENT, N_PMTS, READOUT_WINDOW_NS, TRIGGER_MULTIPLICITY
from rawflow.payloads.rootio import describe, root_time, write_root

SCALARS = ("event_number", "timestamp_ns", "trigger_type")


def checksum(columns: Mapping[str, npt.NDArray[Any]]) -> int:
    """The ELECSIM content checksum."""
    return content_checksum(
        [
            (columns["event_number"], "<u4"),
            (columns["timestamp_ns"], "<i8"),
            (columns["trigger_type"], "<u2"),
            (columns["nch"], "<i8"),
            (columns["ch_pmt"], "<u4"),
            (columns["ch_adc"], "<u2"),
            (columns["ch_tdc"], "<u4"),
        ]
    )


def read_elecsim(path: Path) -> McFile:
    """An ELECSIM file, checked (InputError otherwise)."""
    file = read_mc(
        path,
        kind="ELECSIM",
        tree=READOUT_TREE,
        scalars=SCALARS,
        counter="nch",
        jagged=("ch_pmt", "ch_adc", "ch_tdc"),
        checksum_of=checksum,
    )
    check_pmts(file.columns["ch_pmt"])
    return file


def digitise(detsim: McFile) -> dict[str, npt.NDArray[Any]]:
    """The readout of every event of a DETSIM file (deterministic in its seed)."""
    rng = derived_seed(detsim.header["seed"], "elecsim")
    truth = detsim.columns
    n = len(truth["event_number"])
    owner = np.repeat(np.arange(n), truth["npe"])
    pmt = truth["pe_pmt"].astype(np.int64)
    time = TRIGGER_OFFSET_NS + truth["pe_time"].astype(np.float64) + rng.normal(0.0, TTS_NS, len(owner))
    dark = rng.poisson(DARK_HITS_PER_EVENT, n)
    dark_owner = np.repeat(np.arange(n), dark)
    owner = np.concatenate([owner, dark_owner])
    pmt = np.concatenate([pmt, rng.integers(0, N_PMTS, len(dark_owner))])
    time = np.concatenate([time, rng.uniform(0.0, READOUT_WINDOW_NS, len(dark_owner))])
    # One channel per fired PMT: its first photo-electron's time, all its photo-electrons' charge.
    key = owner * N_PMTS + pmt
    order = np.lexsort((time, key))
    key, time = key[order], time[order]
    first = np.flatnonzero(np.diff(key, prepend=-1) != 0)
    npe = np.diff(np.append(first, len(key)))
    channel_pmt = key[first] % N_PMTS
    constants = calibration()
    charge = np.maximum(rng.normal(npe, SPE_RESOLUTION * np.sqrt(npe)), 0.05)
    adc = np.rint(charge * constants.gain[channel_pmt] + ADC_PEDESTAL + rng.normal(0.0, ADC_NOISE, len(first)))
    tdc = np.rint((time[first] + constants.delay_ns[channel_pmt]) / TDC_NS)
    return {
        "event_number": truth["event_number"].astype(np.uint32),
        "timestamp_ns": truth["timestamp_ns"].astype(np.int64),
        "trigger_type": np.full(n, TRIGGER_MULTIPLICITY, dtype=np.uint16),
        "nch": np.bincount(key[first] // N_PMTS, minlength=n).astype(np.int64),
        "ch_pmt": channel_pmt.astype(np.uint32),
        "ch_adc": np.clip(adc, 0, ADC_MAX).astype(np.uint16),
        "ch_tdc": np.clip(tdc, 0, 2**32 - 1).astype(np.uint32),
    }


def run(input_path: Path, output_path: Path, *, parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The electronics readout of one DETSIM file."""
    detsim = checked(input_path, lambda: read_detsim(input_path))
    columns = digitise(detsim)
    header = detsim.header
    events = detsim.events
    provenance: dict[str, Any] = {"payload": "elecsim", "version": PAYLOAD_VERSION, "input": input_path.name}
    if parameters:
        provenance["parameters"] = dict(parameters)

    def fill(file: Any) -> None:
        file.mktree(
            HEADER_TREE,
            mc_header(
                run=header["run"],
                sequence=header["sequence"],
                start_time_ns=header["start_time_ns"],
                events=events,
                seed=header["seed"],
                checksum=checksum(columns),
            ),
        )
        file["stream"] = detsim.stream
        file["provenance"] = json.dumps(provenance, sort_keys=True)
        file.mktree(
            READOUT_TREE,
            {
                **{name: columns[name] for name in SCALARS},
                "ch": jagged(columns["nch"], pmt=columns["ch_pmt"], adc=columns["ch_adc"], tdc=columns["ch_tdc"]),
            },
        )

    def check(path: Path) -> None:
        written = read_elecsim(path)
        if written.events != events:
            raise OutputCheckError(f"{path.name}: wrote {written.events} events, the DETSIM file has {events}")

    write_root(
        output_path,
        seed=f"elecsim:{header['seed']}:{header['run']}:{header['sequence']}",
        moment=root_time(header["start_time_ns"]),
        fill=fill,
        check=check,
    )
    return {"inputs": [describe(input_path, events)], "outputs": [describe(output_path, events)]}


__all__ = ["digitise", "read_elecsim", "run"]
