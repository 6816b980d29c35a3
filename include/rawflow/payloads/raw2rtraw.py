"""RAW → RTRAW: the RAW file's events, event for event, in a ROOT file (uproot).

RTRAW layout: TTree ``header`` (one entry: run, sequence, start_time_ns, event_count, format_version,
padding), TObjString ``stream``, TObjString ``provenance`` (JSON: payload, version, input name), TTree
``events`` (event_number, timestamp_ns, trigger_type, and the jagged hits: counter ``nhit``, ``hit_pmt``,
``hit_time`` in ns, ``hit_charge`` in p.e.).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from rawflow.payloads import PAYLOAD_VERSION
from rawflow.payloads.errors import InputError, OutputCheckError, checked
from rawflow.payloads.rawformat import RawFile, RawFormatError, decode
from rawflow.payloads.rootio import describe, open_root, root_time, write_root

EVENTS_TREE = "events"
HEADER_TREE = "header"


def read_raw(path: Path) -> RawFile:
    """The RAW file at ``path``, checked (RawFormatError otherwise)."""
    with open(path, "rb") as handle:
        return decode(handle.read())


def jagged(counts: np.ndarray[Any, Any], **columns: np.ndarray[Any, Any]) -> Any:
    """Flat per-hit columns cut into one list per event (``counts`` hits each), as one record array."""
    return ak.zip({name: ak.unflatten(values, counts) for name, values in columns.items()})


def run(input_path: Path, output_path: Path) -> dict[str, Any]:
    raw = checked(input_path, lambda: read_raw(input_path))
    header, events = raw.header, raw.events
    rows = events.events
    counts = rows["nhits"].astype(np.int64)
    provenance = {"payload": "raw2rtraw", "version": PAYLOAD_VERSION, "input": input_path.name}

    def fill(file: Any) -> None:
        file.mktree(
            HEADER_TREE,
            {
                "run": np.array([header.run], dtype=np.uint32),
                "sequence": np.array([header.sequence], dtype=np.uint32),
                "start_time_ns": np.array([header.start_time_ns], dtype=np.int64),
                "event_count": np.array([header.event_count], dtype=np.uint64),
                "format_version": np.array([header.version], dtype=np.uint16),
                "padding": np.array([header.padding], dtype=np.uint32),
            },
        )
        file["stream"] = header.stream
        file["provenance"] = json.dumps(provenance, sort_keys=True)
        file.mktree(
            EVENTS_TREE,
            {
                "event_number": rows["event_number"].copy(),
                "timestamp_ns": rows["timestamp_ns"].copy(),
                "trigger_type": rows["trigger_type"].copy(),
                "hit": jagged(
                    counts,
                    pmt=events.hits["pmt"].copy(),
                    time=events.hits["time"].copy(),
                    charge=events.hits["charge"].copy(),
                ),
            },
        )

    def check(path: Path) -> None:
        written = count_rtraw(path)
        if written != events.count:
            raise OutputCheckError(f"{path.name}: wrote {written} events, the RAW file has {events.count}")

    write_root(
        output_path,
        seed=f"raw2rtraw:{header.run}:{header.stream}:{header.sequence}:{header.start_time_ns}",
        moment=root_time(header.start_time_ns),
        fill=fill,
        check=check,
    )
    return {
        "inputs": [describe(input_path, events.count)],
        "outputs": [describe(output_path, count_rtraw(output_path))],
    }


def count_rtraw(path: Path) -> int:
    """Events in an RTRAW file, checked against its header (InputError otherwise)."""
    with open_root(path, (HEADER_TREE, EVENTS_TREE)) as file:
        declared = int(file[HEADER_TREE]["event_count"].array(library="np")[0])
        entries = int(file[EVENTS_TREE].num_entries)
        hits = int(file[EVENTS_TREE]["nhit"].array(library="np").sum()) if entries else 0
        stored = len(ak.flatten(file[EVENTS_TREE]["hit_charge"].array(library="ak")))
    if entries != declared:
        raise InputError(f"event count mismatch: header declares {declared} events, the events tree has {entries}")
    if hits != stored:
        raise InputError(f"hit count mismatch: counters say {hits} hits, {stored} stored")
    return entries


__all__ = ["RawFormatError", "count_rtraw", "read_raw", "run"]
