"""detsim: generate events from a seed and simulate the photo-electrons they make on the PMTs (DETSIM file).

Parameters (``--param NAME=VALUE``): ``seed`` (required: the campaign derives it from the campaign and the job
key, so a job run again writes the same bytes), ``events`` (required), ``run``, ``sequence``,
``start_time_ns`` (the header's), ``generator`` (``ibd``: the prompt positron of inverse beta decay, a reactor
spectrum; ``gamma``: mono-energetic at ``energy_mev``, default 2.22 MeV, the neutron-capture line;
``radioactivity``: a falling spectrum above 0.7 MeV), ``rate_hz`` (event rate, default 1000). Other parameters
are recorded in the provenance.

Physics (the same detector as the RAW generator, ``rawformat``): a vertex uniform in the 17.7 m
liquid-scintillator sphere, PE_PER_MEV photo-electrons per MeV (Poisson), each emitted isotropically and
landing on the PMT of the 19.5 m sphere it reaches, at its time of flight. The truth (energy, vertex) is stored
with the photo-electrons; the event number carries through elecsim, cal and rec.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rawflow.payloads import PAYLOAD_VERSION
from rawflow.payloads.errors import InputError, OutputCheckError
from rawflow.payloads.mc import (
    HEADER_TREE,
    TRUTH_TREE,
    McFile,
    ParameterError,
    check_pmts,
    content_checksum,
    float_parameter,
    integer_parameter,
    mc_header,
    read_mc,
)
from rawflow.payloads.raw2rtraw import jagged
from rawflow.payloads.rawformat import LIGHT_SPEED_LS_M_PER_NS, LS_RADIUS_M, PE_PER_MEV, PMT_RADIUS_M, pmt_at
from rawflow.payloads.rootio import describe, root_time, write_root

GENERATORS = ("ibd", "gamma", "radioactivity")
MAX_EVENTS = 1_000_000
SCALARS = ("event_number", "timestamp_ns", "energy_mev", "x", "y", "z")


def checksum(columns: Mapping[str, npt.NDArray[Any]]) -> int:
    """The DETSIM content checksum (event columns, then the photo-electrons)."""
    return content_checksum(
        [
            (columns["event_number"], "<u4"),
            (columns["timestamp_ns"], "<i8"),
            (columns["energy_mev"], "<f8"),
            (columns["x"], "<f8"),
            (columns["y"], "<f8"),
            (columns["z"], "<f8"),
            (columns["npe"], "<i8"),
            (columns["pe_pmt"], "<u4"),
            (columns["pe_time"], "<f4"),
        ]
    )


def read_detsim(path: Path) -> McFile:
    """A DETSIM file, checked (InputError otherwise)."""
    file = read_mc(
        path,
        kind="DETSIM",
        tree=TRUTH_TREE,
        scalars=SCALARS,
        counter="npe",
        jagged=("pe_pmt", "pe_time"),
        checksum_of=checksum,
    )
    check_pmts(file.columns["pe_pmt"])
    if not np.isfinite(file.columns["pe_time"]).all():
        raise InputError("a photo-electron time is not finite")
    return file


def energies(rng: np.random.Generator, n: int, generator: str, energy_mev: float) -> npt.NDArray[np.float64]:
    """Visible energy per event (MeV) for ``generator``."""
    if generator == "gamma":
        return np.full(n, energy_mev)
    if generator == "radioactivity":
        return 0.7 + rng.exponential(1.3, n)
    # ibd: the prompt positron, E_vis = E_nu - 0.78 MeV, of a reactor spectrum peaking near 4 MeV.
    return np.clip(rng.normal(3.3, 1.3, n), 1.022, 9.0)


def simulate(
    seed: int, n: int, *, generator: str, energy_mev: float, start_time_ns: int, rate_hz: float
) -> dict[str, npt.NDArray[Any]]:
    """``n`` events from ``seed`` (pure and deterministic): truth columns and the photo-electrons."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    energy = energies(rng, n, generator, energy_mev)
    direction = rng.normal(size=(n, 3))
    direction /= np.sqrt((direction * direction).sum(axis=1))[:, None]
    vertex = direction * (LS_RADIUS_M * rng.random(n) ** (1 / 3))[:, None]
    photons = rng.poisson(energy * PE_PER_MEV).astype(np.int64)
    owner = np.repeat(np.arange(n), photons)
    u = rng.normal(size=(len(owner), 3))
    u /= np.sqrt((u * u).sum(axis=1))[:, None]
    v = vertex[owner]
    vu = (v * u).sum(axis=1)
    path = -vu + np.sqrt(vu * vu - (v * v).sum(axis=1) + PMT_RADIUS_M**2)
    pmt = pmt_at(v + path[:, None] * u)
    time = (path / LIGHT_SPEED_LS_M_PER_NS).astype(np.float32)
    stamps = start_time_ns + np.cumsum(rng.exponential(1e9 / rate_hz, n)).astype(np.int64)
    return {
        "event_number": np.arange(n, dtype=np.uint32),
        "timestamp_ns": stamps.astype(np.int64),
        "energy_mev": energy.astype(np.float64),
        "x": vertex[:, 0].astype(np.float64),
        "y": vertex[:, 1].astype(np.float64),
        "z": vertex[:, 2].astype(np.float64),
        "npe": photons,
        "pe_pmt": pmt.astype(np.uint32),
        "pe_time": time,
    }


def run(output_path: Path, *, parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Generate and simulate one file's events into ``output_path``."""
    parameters = dict(parameters or {})
    seed = integer_parameter(parameters, "seed", minimum=0, maximum=2**63 - 1, default=None)
    n = integer_parameter(parameters, "events", minimum=1, maximum=MAX_EVENTS, default=None)
    run_number = integer_parameter(parameters, "run", minimum=0, maximum=2**32 - 1, default=0)
    sequence = integer_parameter(parameters, "sequence", minimum=0, maximum=2**32 - 1, default=0)
    start_time_ns = integer_parameter(parameters, "start_time_ns", minimum=0, maximum=2**62, default=0)
    generator = parameters.get("generator", "ibd")
    if generator not in GENERATORS:
        raise ParameterError(f"parameter generator={generator!r}: expected one of {', '.join(GENERATORS)}")
    energy_mev = float_parameter(parameters, "energy_mev", minimum=0.0, maximum=100.0, default=2.22)
    rate_hz = float_parameter(parameters, "rate_hz", minimum=1e-3, maximum=1e7, default=1000.0)

    columns = simulate(
        seed, n, generator=generator, energy_mev=energy_mev, start_time_ns=start_time_ns, rate_hz=rate_hz
    )
    provenance = {
        "payload": "detsim",
        "version": PAYLOAD_VERSION,
        "input": None,
        "seed": seed,
        "generator": generator,
        "parameters": parameters,
    }

    def fill(file: Any) -> None:
        file.mktree(
            HEADER_TREE,
            mc_header(
                run=run_number,
                sequence=sequence,
                start_time_ns=start_time_ns,
                events=n,
                seed=seed,
                checksum=checksum(columns),
            ),
        )
        file["stream"] = generator
        file["provenance"] = json.dumps(provenance, sort_keys=True)
        file.mktree(
            TRUTH_TREE,
            {
                **{name: columns[name] for name in SCALARS},
                "pe": jagged(columns["npe"], pmt=columns["pe_pmt"], time=columns["pe_time"]),
            },
        )

    def check(path: Path) -> None:
        written = read_detsim(path)
        if written.events != n:
            raise OutputCheckError(f"{path.name}: wrote {written.events} events, generated {n}")

    write_root(
        output_path,
        seed=f"detsim:{seed}:{run_number}:{sequence}",
        moment=root_time(start_time_ns),
        fill=fill,
        check=check,
    )
    return {
        "inputs": [],
        "outputs": [describe(output_path, n)],
        "seed": seed,
        "generator": generator,
        "photo_electrons": int(columns["npe"].sum()),
    }


__all__ = ["GENERATORS", "read_detsim", "run", "simulate"]
