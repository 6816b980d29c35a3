"""cal: ELECSIM → CALIB, the readout calibrated into PMT hits (time in ns, charge in photo-electrons).

Per channel: charge = (ADC − pedestal) / the PMT's gain, time = TDC × TDC_NS − the PMT's cable delay, with the
same calibration table elecsim digitised with (``mc.calibration``). The CALIB file has RTRAW's layout (header
with RTRAW's branches plus ``seed`` and ``checksum``; tree ``events`` with the jagged ``hit``), so the ``rec``
payload reconstructs it as it reconstructs data. Parameters (``--param``): ``gain_scale`` multiplies every
gain (a miscalibration study; default 1), others are recorded in the provenance.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rawflow.payloads import PAYLOAD_VERSION
from rawflow.payloads.elecsim import read_elecsim
from rawflow.payloads.errors import OutputCheckError, checked
from rawflow.payloads.mc import (
    ADC_PEDESTAL,
    EVENTS_TREE,
    HEADER_TREE,
    TDC_NS,
    McFile,
    calibration,
    content_checksum,
    float_parameter,
    mc_header,
    read_mc,
)
from rawflow.payloads.raw2rtraw import jagged
from rawflow.payloads.rootio import describe, root_time, write_root

SCALARS = ("event_number", "timestamp_ns", "trigger_type")


def checksum(columns: Mapping[str, npt.NDArray[Any]]) -> int:
    """The CALIB content checksum (``rec`` checks it too when it reads a CALIB file)."""
    return content_checksum(
        [
            (columns["event_number"], "<u4"),
            (columns["timestamp_ns"], "<i8"),
            (columns["trigger_type"], "<u2"),
            (columns["nhit"], "<i8"),
            (columns["hit_pmt"], "<u4"),
            (columns["hit_time"], "<f4"),
            (columns["hit_charge"], "<f4"),
        ]
    )


def read_calib(path: Path) -> McFile:
    """A CALIB file, checked (InputError otherwise)."""
    return read_mc(
        path,
        kind="CALIB",
        tree=EVENTS_TREE,
        scalars=SCALARS,
        counter="nhit",
        jagged=("hit_pmt", "hit_time", "hit_charge"),
        checksum_of=checksum,
    )


def calibrate(elecsim: McFile, *, gain_scale: float = 1.0) -> dict[str, npt.NDArray[Any]]:
    """PMT hits from the channels of an ELECSIM file."""
    readout = elecsim.columns
    pmt = readout["ch_pmt"].astype(np.int64)
    constants = calibration()
    gain = constants.gain[pmt] * gain_scale
    charge = np.maximum((readout["ch_adc"].astype(np.float64) - ADC_PEDESTAL) / gain, 0.0)
    time = readout["ch_tdc"].astype(np.float64) * TDC_NS - constants.delay_ns[pmt]
    return {
        "event_number": readout["event_number"].astype(np.uint32),
        "timestamp_ns": readout["timestamp_ns"].astype(np.int64),
        "trigger_type": readout["trigger_type"].astype(np.uint16),
        "nhit": readout["nch"].astype(np.int64),
        "hit_pmt": pmt.astype(np.uint32),
        "hit_time": time.astype(np.float32),
        "hit_charge": charge.astype(np.float32),
    }


def run(input_path: Path, output_path: Path, *, parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Calibrate one ELECSIM file."""
    parameters = dict(parameters or {})
    gain_scale = float_parameter(parameters, "gain_scale", minimum=0.01, maximum=100.0, default=1.0)
    elecsim = checked(input_path, lambda: read_elecsim(input_path))
    columns = calibrate(elecsim, gain_scale=gain_scale)
    header = elecsim.header
    events = elecsim.events
    provenance: dict[str, Any] = {"payload": "cal", "version": PAYLOAD_VERSION, "input": input_path.name}
    if parameters:
        provenance["parameters"] = parameters

    def fill(file: Any) -> None:
        file.mktree(
            HEADER_TREE,
            {
                **mc_header(
                    run=header["run"],
                    sequence=header["sequence"],
                    start_time_ns=header["start_time_ns"],
                    events=events,
                    seed=header["seed"],
                    checksum=checksum(columns),
                ),
                "padding": np.array([0], dtype=np.uint32),  # RTRAW's header branch (a RAW file's padding)
            },
        )
        file["stream"] = elecsim.stream
        file["provenance"] = json.dumps(provenance, sort_keys=True)
        file.mktree(
            EVENTS_TREE,
            {
                **{name: columns[name] for name in SCALARS},
                "hit": jagged(
                    columns["nhit"], pmt=columns["hit_pmt"], time=columns["hit_time"], charge=columns["hit_charge"]
                ),
            },
        )

    def check(path: Path) -> None:
        written = read_calib(path)
        if written.events != events:
            raise OutputCheckError(f"{path.name}: wrote {written.events} events, the ELECSIM file has {events}")

    write_root(
        output_path,
        seed=f"cal:{header['seed']}:{header['run']}:{header['sequence']}",
        moment=root_time(header["start_time_ns"]),
        fill=fill,
        check=check,
    )
    return {"inputs": [describe(input_path, events)], "outputs": [describe(output_path, events)]}


__all__ = ["calibrate", "read_calib", "run"]
