"""DQM: a run's summary from its RTRAW or ESD files, as JSON numbers (and an SVG of the charge spectrum).

Summary: files with their event counts, events, time span, live time (the sum of each file's span) and
the trigger rate over it, events per trigger type, mean hits, and the charge spectrum (total charge per
event, fixed 5 p.e. bins from 0 to 1000 p.e. plus overflow) so that runs compare bin by bin and the web
view draws the plot from the numbers.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rawflow.payloads import PAYLOAD_VERSION
from rawflow.payloads.errors import InputError, checked
from rawflow.payloads.raw2rtraw import EVENTS_TREE, HEADER_TREE
from rawflow.payloads.rec import ESD_TREE, count_esd, read_rtraw
from rawflow.payloads.rootio import describe, open_root, write_text_atomically

BIN_WIDTH_PE = 5.0
MAX_CHARGE_PE = 1000.0
EDGES = np.arange(0.0, MAX_CHARGE_PE + BIN_WIDTH_PE, BIN_WIDTH_PE)


def _kind(path: Path) -> str:
    with open_root(path, (HEADER_TREE,)) as file:
        if EVENTS_TREE in file:
            return "RTRAW"
        if ESD_TREE in file:
            return "ESD"
    raise InputError(f"neither an RTRAW ({EVENTS_TREE!r} tree) nor an ESD ({ESD_TREE!r} tree) file")


def _per_event(path: Path) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
    """(header, columns): per event timestamp, trigger type, hits and total charge of one file."""
    kind = _kind(path)
    if kind == "RTRAW":
        header, stream, columns = read_rtraw(path)
        owner = np.repeat(np.arange(len(columns["nhit"])), columns["nhit"])
        total = np.bincount(owner, weights=columns["hit_charge"].astype(np.float64), minlength=len(columns["nhit"]))
        per_event = {
            "timestamp_ns": columns["timestamp_ns"],
            "trigger_type": columns["trigger_type"],
            "nhits": columns["nhit"],
            "total_charge": total,
        }
    else:
        count_esd(path)
        with open_root(path, (HEADER_TREE, ESD_TREE, "stream")) as file:
            header = {name: file[HEADER_TREE][name].array(library="np") for name in ("run", "sequence")}
            stream = str(file["stream"])
            tree = file[ESD_TREE]
            per_event = {
                name: tree[name].array(library="np")
                for name in ("timestamp_ns", "trigger_type", "nhits", "total_charge")
            }
    info = {"kind": kind, "run": int(header["run"][0]), "stream": stream, "sequence": int(header["sequence"][0])}
    return info, per_event


def summarise(inputs: list[Path]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    files: list[dict[str, Any]] = []
    parts: list[dict[str, npt.NDArray[Any]]] = []
    for path in inputs:
        info, per_event = checked(path, lambda path=path: _per_event(path))  # type: ignore[misc]
        files.append({**describe(path, len(per_event["nhits"])), **info})
        parts.append(per_event)
    runs = sorted({f["run"] for f in files})
    if len(runs) > 1:
        raise ValueError(f"dqm summarises one run at a time, got runs {runs}")
    stamps = np.concatenate([p["timestamp_ns"] for p in parts]).astype(np.int64)
    triggers = np.concatenate([p["trigger_type"] for p in parts]).astype(np.int64)
    nhits = np.concatenate([p["nhits"] for p in parts]).astype(np.int64)
    charge = np.concatenate([p["total_charge"] for p in parts]).astype(np.float64)
    events = len(stamps)
    span_s = float(stamps.max() - stamps.min()) / 1e9 if events else 0.0
    # The trigger rate over the time the files cover (a run's files can be far apart): Σ(n − 1) / Σ span.
    spans = [
        (len(p["timestamp_ns"]) - 1, float(np.ptp(p["timestamp_ns"])) / 1e9)
        for p in parts
        if len(p["timestamp_ns"]) > 1
    ]
    live_s = sum(span for _n, span in spans)
    counts, _ = np.histogram(np.clip(charge, 0.0, None), bins=EDGES)
    summary = {
        "run": runs[0] if runs else None,
        "streams": sorted({f["stream"] for f in files}),
        "events": events,
        "first_timestamp_ns": int(stamps.min()) if events else None,
        "last_timestamp_ns": int(stamps.max()) if events else None,
        "time_span_s": span_s,
        "live_time_s": live_s,
        "rate_hz": sum(n for n, _span in spans) / live_s if live_s > 0 else None,
        "events_by_trigger": {str(t): int(c) for t, c in zip(*np.unique(triggers, return_counts=True), strict=True)},
        "mean_nhits": float(nhits.mean()) if events else None,
        "mean_charge_pe": float(charge.mean()) if events else None,
        "charge_spectrum": {
            "unit": "p.e.",
            "edges": EDGES.tolist(),
            "counts": counts.tolist(),
            "overflow": int((charge >= MAX_CHARGE_PE).sum()),
        },
    }
    return summary, files


def svg(summary: dict[str, Any]) -> str:
    """The charge spectrum as a small standalone SVG bar chart."""
    spectrum = summary["charge_spectrum"]
    counts = spectrum["counts"]
    width, height, margin = 640, 320, 40
    top = max(max(counts, default=0), 1)
    bar = (width - 2 * margin) / len(counts)
    bars = "".join(
        f'<rect x="{margin + i * bar:.1f}" y="{height - margin - (height - 2 * margin) * c / top:.1f}" '
        f'width="{bar:.2f}" height="{(height - 2 * margin) * c / top:.1f}" fill="#3b6ea5"/>'
        for i, c in enumerate(counts)
        if c
    )
    title = html.escape(f"Run {summary['run']}: charge spectrum ({summary['events']} events)")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<text x="{margin}" y="20" font-family="sans-serif" font-size="14">{title}</text>{bars}'
        f'<line x1="{margin}" y1="{height - margin}" x2="{width - margin}" y2="{height - margin}" stroke="black"/>'
        f'<text x="{width - margin}" y="{height - 12}" text-anchor="end" font-family="sans-serif" font-size="12">'
        f"total charge [p.e.], {spectrum['edges'][1] - spectrum['edges'][0]:g} p.e. bins</text></svg>\n"
    )


def run(output_path: Path, inputs: list[Path], *, svg_path: Path | None = None) -> dict[str, Any]:
    summary, files = summarise(inputs)
    document = {"payload": "dqm", "version": PAYLOAD_VERSION, "inputs": [f["name"] for f in files], **summary}
    write_text_atomically(output_path, json.dumps(document, sort_keys=True) + "\n")
    outputs = [describe(output_path, summary["events"])]
    if svg_path is not None:
        write_text_atomically(svg_path, svg(summary))
        outputs.append(describe(svg_path, summary["events"]))
    return {"inputs": files, "outputs": outputs}
