"""RTRAW → ESD: per-event reconstructed quantities in a ROOT file (also CALIB → ESD: the MC chain's last step).

Per event: total charge (p.e.), number of hits, charge-weighted mean hit time (ns), the charge centre
``cc_x/cc_y/cc_z`` (m) and the vertex ``x/y/z`` (m). For light emitted isotropically from a point inside a
sphere of PMTs, the mean landing point is 2/3 of the way from the centre to the point (its radial part is
r − r/3, the rest cancels), so the vertex is the charge centre × 3/2.

ESD layout: TTree ``header`` (copied from the RTRAW), TObjString ``stream``, TObjString ``provenance``,
TTree ``esd`` (event_number, timestamp_ns, trigger_type, nhits, total_charge, time_ns, cc_x, cc_y, cc_z,
x, y, z, r).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import numpy.typing as npt

from rawflow.payloads import PAYLOAD_VERSION
from rawflow.payloads.errors import InputError, OutputCheckError, checked
from rawflow.payloads.raw2rtraw import EVENTS_TREE, HEADER_TREE, count_rtraw
from rawflow.payloads.rawformat import N_PMTS, pmt_positions
from rawflow.payloads.rootio import describe, open_root, reading, root_time, write_root

ESD_TREE = "esd"
CHARGE_CENTRE_SCALE = 1.5
HEADER_BRANCHES = ("run", "sequence", "start_time_ns", "event_count", "format_version", "padding")


def read_rtraw(path: Path) -> tuple[dict[str, Any], str, dict[str, npt.NDArray[Any]]]:
    """(header, stream, columns) of an RTRAW file — or of a CALIB file, the MC chain's calibrated hits in the
    same layout, whose header's content checksum is checked too; columns hold flat hits and ``nhit`` per
    event."""
    with reading():
        return _read_rtraw(path)


def _read_rtraw(path: Path) -> tuple[dict[str, Any], str, dict[str, npt.NDArray[Any]]]:
    count_rtraw(path)
    with open_root(path, (HEADER_TREE, EVENTS_TREE, "stream")) as file:
        missing = [name for name in HEADER_BRANCHES if name not in file[HEADER_TREE]]
        if missing:
            raise InputError(f"not an RTRAW or CALIB file: the header has no {', '.join(missing)}")
        header = {name: file[HEADER_TREE][name].array(library="np") for name in HEADER_BRANCHES}
        stored_checksum = (
            int(file[HEADER_TREE]["checksum"].array(library="np")[0]) if "checksum" in file[HEADER_TREE] else None
        )
        stream = str(file["stream"])
        tree = file[EVENTS_TREE]
        columns = {name: tree[name].array(library="np") for name in ("event_number", "timestamp_ns", "trigger_type")}
        columns["nhit"] = tree["nhit"].array(library="np").astype(np.int64)
        for name in ("hit_pmt", "hit_time", "hit_charge"):
            columns[name] = ak.to_numpy(ak.flatten(tree[name].array(library="ak")))
    if len(columns["hit_pmt"]) and int(columns["hit_pmt"].max()) >= N_PMTS:
        raise InputError(f"PMT id {int(columns['hit_pmt'].max())} out of range (0..{N_PMTS - 1})")
    if stored_checksum is not None:  # a CALIB file (cal): its events must be the ones it was written with
        from rawflow.payloads.cal import checksum

        actual = checksum(columns)
        if actual != stored_checksum:
            raise InputError(f"checksum mismatch: header says {stored_checksum:08x}, the events give {actual:08x}")
    return header, stream, columns


def reconstruct(
    columns: dict[str, npt.NDArray[Any]], *, scale: float = CHARGE_CENTRE_SCALE
) -> dict[str, npt.NDArray[Any]]:
    counts = columns["nhit"]
    n = len(counts)
    owner = np.repeat(np.arange(n), counts)
    charge = columns["hit_charge"].astype(np.float64)
    position = pmt_positions()[columns["hit_pmt"].astype(np.int64)]
    total = np.bincount(owner, weights=charge, minlength=n)
    safe = np.where(total > 0, total, 1.0)
    centre = np.stack([np.bincount(owner, weights=charge * position[:, k], minlength=n) / safe for k in range(3)], 1)
    time = np.bincount(owner, weights=charge * columns["hit_time"], minlength=n) / safe
    vertex = centre * scale
    return {
        "event_number": columns["event_number"],
        "timestamp_ns": columns["timestamp_ns"],
        "trigger_type": columns["trigger_type"],
        "nhits": counts.astype(np.uint32),
        "total_charge": total.astype(np.float32),
        "time_ns": time.astype(np.float32),
        "cc_x": centre[:, 0].astype(np.float32),
        "cc_y": centre[:, 1].astype(np.float32),
        "cc_z": centre[:, 2].astype(np.float32),
        "x": vertex[:, 0].astype(np.float32),
        "y": vertex[:, 1].astype(np.float32),
        "z": vertex[:, 2].astype(np.float32),
        "r": np.sqrt((vertex * vertex).sum(axis=1)).astype(np.float32),
    }


def run(input_path: Path, output_path: Path, *, parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Reconstruct one file. ``parameters`` (a campaign's): written into the provenance; ``vertex_scale``
    replaces the charge-centre → vertex factor (default 3/2)."""
    parameters = dict(parameters or {})
    try:
        scale = float(parameters.get("vertex_scale", CHARGE_CENTRE_SCALE))
    except ValueError:
        raise InputError(f"vertex_scale={parameters['vertex_scale']!r} is not a number") from None
    header, stream, columns = checked(input_path, lambda: read_rtraw(input_path))
    events = len(columns["nhit"])
    esd = reconstruct(columns, scale=scale)
    provenance: dict[str, Any] = {"payload": "rec", "version": PAYLOAD_VERSION, "input": input_path.name}
    if parameters:
        provenance["parameters"] = parameters
    start_time_ns = int(header["start_time_ns"][0])

    def fill(file: Any) -> None:
        file.mktree(HEADER_TREE, header)
        file["stream"] = stream
        file["provenance"] = json.dumps(provenance, sort_keys=True)
        file.mktree(ESD_TREE, esd)

    def check(path: Path) -> None:
        written = count_esd(path)
        if written != events:
            raise OutputCheckError(f"{path.name}: wrote {written} events, the RTRAW file has {events}")

    write_root(
        output_path,
        seed=f"rec:{int(header['run'][0])}:{stream}:{int(header['sequence'][0])}:{start_time_ns}",
        moment=root_time(start_time_ns),
        fill=fill,
        check=check,
    )
    return {"inputs": [describe(input_path, events)], "outputs": [describe(output_path, count_esd(output_path))]}


def count_esd(path: Path) -> int:
    with open_root(path, (HEADER_TREE, ESD_TREE)) as file:
        declared = int(file[HEADER_TREE]["event_count"].array(library="np")[0])
        entries = int(file[ESD_TREE].num_entries)
    if entries != declared:
        raise InputError(f"event count mismatch: header declares {declared} events, the esd tree has {entries}")
    return entries
