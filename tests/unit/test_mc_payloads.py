"""The Monte Carlo payloads through their command line, as DIRAC or HTCondor jobs run them: detsim → elecsim →
cal → rec. Deterministic from the seed, each step checks the previous step's file (header, counts, content
checksum) and a bad input or parameter is one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot

from rawflow.payloads import PAYLOAD_VERSION
from rawflow.payloads.rawformat import PE_PER_MEV

REPO = Path(__file__).resolve().parents[2]
START_NS = 1_796_083_200 * 1_000_000_000  # 2026-12-01 00:00 UTC
GEN = ["--param", "run=900001", "--param", f"start_time_ns={START_NS}", "--param", "generator=ibd"]


def payload(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "include")}
    return subprocess.run(
        [sys.executable, "-m", "rawflow.payloads", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=cwd,
    )


def ok(*args: str | Path, cwd: Path | None = None) -> dict[str, Any]:
    result = payload(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["version"] == PAYLOAD_VERSION
    return report


def fails(code: int, *args: str | Path) -> str:
    """The one line a failing payload prints (and its exit code is ``code``)."""
    result = payload(*args)
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    line = result.stderr.rstrip("\n")
    assert "\n" not in line and line, result.stderr
    return line


def adler32(path: Path) -> str:
    return f"{zlib.adler32(path.read_bytes()) & 0xFFFFFFFF:08x}"


@dataclass
class Chain:
    dir: Path
    files: dict[str, list[Path]]  # step → files of the two jobs
    reports: dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """Two generator jobs (seeds 11 and 12, 150 and 80 events); elecsim and cal over both files in one job each
    (N inputs then N outputs, as a campaign's multi-file sub-job); rec one file at a time."""
    work = tmp_path_factory.mktemp("mc")
    names = [work / f"JUNO.900001.MC.ibd.mc-test.20261201000000.{i:05d}" for i in (1, 2)]
    files = {
        step: [n.parent / f"{n.name}.{ext}" for n in names]
        for step, ext in (("detsim", "detsim"), ("elecsim", "elecsim"), ("cal", "calib"), ("rec", "esd"))
    }
    reports: dict[str, list[dict[str, Any]]] = {step: [] for step in files}
    for (seed, events, sequence), out in zip(((11, 150, 1), (12, 80, 2)), files["detsim"], strict=True):
        reports["detsim"].append(
            ok(
                "detsim",
                *GEN,
                "--param",
                f"seed={seed}",
                "--param",
                f"events={events}",
                "--param",
                f"sequence={sequence}",
                out,
            )
        )
    reports["elecsim"].append(ok("elecsim", *files["detsim"], *files["elecsim"]))
    reports["cal"].append(ok("cal", "--param", "note=nominal", *files["elecsim"], *files["cal"]))
    for calib, esd in zip(files["cal"], files["rec"], strict=True):
        reports["rec"].append(ok("rec", calib, esd))
    return Chain(work, files, reports)


def test_every_step_reports_its_files_with_sizes_checksums_and_events(chain: Chain) -> None:
    (first, second) = chain.reports["detsim"]
    assert first["inputs"] == [] and first["seed"] == 11 and first["generator"] == "ibd"
    assert [o["events"] for r in chain.reports["detsim"] for o in r["outputs"]] == [150, 80]
    assert first["parameters"]["seed"] == "11" and second["parameters"]["events"] == "80"
    for step in ("elecsim", "cal"):
        (report,) = chain.reports[step]
        assert [i["events"] for i in report["inputs"]] == [150, 80] == [o["events"] for o in report["outputs"]]
    assert [r["outputs"][0]["events"] for r in chain.reports["rec"]] == [150, 80]
    for step, reports in chain.reports.items():
        written = [o for r in reports for o in r["outputs"]]
        assert [Path(o["path"]).name for o in written] == [p.name for p in chain.files[step]]
        for entry, path in zip(written, chain.files[step], strict=True):
            assert (entry["size"], entry["adler32"]) == (path.stat().st_size, adler32(path))


def test_files_carry_a_header_provenance_and_the_event_numbers(chain: Chain) -> None:
    for step, tree in (("detsim", "truth"), ("elecsim", "readout"), ("cal", "events")):
        for path, events, sequence in zip(chain.files[step], (150, 80), (1, 2), strict=True):
            with uproot.open(path) as file:
                header = {k: v[0] for k, v in file["header"].arrays(library="np").items()}
                provenance = json.loads(str(file["provenance"]))
                numbers = file[tree]["event_number"].array(library="np")
                assert str(file["stream"]) == "ibd"
            assert (header["run"], header["sequence"], header["event_count"]) == (900001, sequence, events)
            assert header["format_version"] == 1 and header["seed"] == (11 if sequence == 1 else 12)
            assert header["start_time_ns"] == START_NS and "checksum" in header
            assert provenance["payload"] == step and provenance["version"] == PAYLOAD_VERSION
            assert list(numbers) == list(range(events))
    with uproot.open(chain.files["cal"][0]) as file:
        assert json.loads(str(file["provenance"]))["parameters"] == {"note": "nominal"}
        assert json.loads(str(file["provenance"]))["input"] == chain.files["elecsim"][0].name


def test_a_seed_gives_the_same_bytes_and_another_seed_other_events(tmp_path: Path, chain: Chain) -> None:
    """Rerunning a job (a resubmission) writes the same file, step by step; another seed other events."""
    again = tmp_path / "again"
    again.mkdir()
    name = chain.files["detsim"][0].name
    ok("detsim", *GEN, "--param", "seed=11", "--param", "events=150", "--param", "sequence=1", name, cwd=again)
    assert (again / name).read_bytes() == chain.files["detsim"][0].read_bytes()
    elecsim = chain.files["elecsim"][0].name
    ok("elecsim", name, elecsim, cwd=again)
    assert (again / elecsim).read_bytes() == chain.files["elecsim"][0].read_bytes()
    other = tmp_path / "other"
    other.mkdir()
    ok("detsim", *GEN, "--param", "seed=99", "--param", "events=150", "--param", "sequence=1", name, cwd=other)
    with uproot.open(other / name) as a, uproot.open(chain.files["detsim"][0]) as b:
        assert not np.array_equal(
            a["truth"]["energy_mev"].array(library="np"), b["truth"]["energy_mev"].array(library="np")
        )


def test_the_chain_reconstructs_the_generated_events(chain: Chain) -> None:
    """Physics end to end: the reconstructed vertex follows the generated one and the calibrated charge the
    generated energy (PE_PER_MEV photo-electrons per MeV, calibration undone)."""
    with uproot.open(chain.files["detsim"][0]) as file:
        truth = file["truth"].arrays(["event_number", "energy_mev", "x", "y", "z"], library="np")
    with uproot.open(chain.files["rec"][0]) as file:
        esd = file["esd"].arrays(["event_number", "x", "y", "z", "total_charge"], library="np")
    assert list(esd["event_number"]) == list(truth["event_number"])
    for axis in "xyz":
        assert np.corrcoef(truth[axis], esd[axis])[0, 1] > 0.95
    assert np.corrcoef(truth["energy_mev"], esd["total_charge"])[0, 1] > 0.95
    ratio = float(np.mean(esd["total_charge"] / truth["energy_mev"]))
    assert ratio == pytest.approx(PE_PER_MEV, rel=0.1)
    # IBD prompt positrons: 1.022 to 9 MeV
    assert truth["energy_mev"].min() >= 1.022 and truth["energy_mev"].max() <= 9.0


def test_a_gamma_generator_makes_its_line_and_gain_scale_miscalibrates(tmp_path: Path) -> None:
    ok(
        "detsim",
        "--param",
        "seed=5",
        "--param",
        "events=60",
        "--param",
        "generator=gamma",
        "--param",
        "energy_mev=1.0",
        tmp_path / "g.detsim",
    )
    with uproot.open(tmp_path / "g.detsim") as file:
        assert set(file["truth"]["energy_mev"].array(library="np")) == {1.0}
    ok("elecsim", tmp_path / "g.detsim", tmp_path / "g.elecsim")
    ok("cal", tmp_path / "g.elecsim", tmp_path / "a.calib")
    ok("cal", "--param", "gain_scale=2", tmp_path / "g.elecsim", tmp_path / "b.calib")
    with uproot.open(tmp_path / "a.calib") as a, uproot.open(tmp_path / "b.calib") as b:
        qa = float(ak.sum(a["events"]["hit_charge"].array(library="ak")))
        qb = float(ak.sum(b["events"]["hit_charge"].array(library="ak")))
    assert qb == pytest.approx(qa / 2, rel=1e-3)


TREES = {
    "truth": (("event_number", "timestamp_ns", "energy_mev", "x", "y", "z"), "pe", ("pmt", "time")),
    "readout": (("event_number", "timestamp_ns", "trigger_type"), "ch", ("pmt", "adc", "tdc")),
    "events": (("event_number", "timestamp_ns", "trigger_type"), "hit", ("pmt", "time", "charge")),
}


def _tamper(source: Path, target: Path, tree: str, branch: str) -> None:
    """A copy of ``source`` whose ``branch`` changed but whose header (and checksum) did not: ROOT reads it."""
    names, record, fields = TREES[tree]
    with uproot.open(source) as file:
        header = file["header"].arrays(library="np")
        stream, provenance = str(file["stream"]), str(file["provenance"])
        columns: dict[str, Any] = {name: file[tree][name].array(library="np") for name in names}
        jagged = {field: file[tree][f"{record}_{field}"].array(library="ak") for field in fields}
    columns[branch] = columns[branch] + 1
    with uproot.recreate(target) as out:
        out.mktree("header", dict(header))
        out["stream"] = stream
        out["provenance"] = provenance
        out.mktree(tree, {**columns, record: ak.zip(jagged)})


def test_each_step_refuses_a_bad_input_with_one_line_and_exit_3(chain: Chain, tmp_path: Path) -> None:
    detsim, elecsim, calib = chain.files["detsim"][0], chain.files["elecsim"][0], chain.files["cal"][0]
    # The wrong step's file.
    assert fails(3, "elecsim", elecsim, tmp_path / "x.elecsim") == (
        f"elecsim: {elecsim.name}: not a DETSIM file: no 'truth' tree"
    )
    assert (
        fails(3, "cal", detsim, tmp_path / "x.calib") == f"cal: {detsim.name}: not an ELECSIM file: no 'readout' tree"
    )
    assert fails(3, "rec", elecsim, tmp_path / "x.esd").startswith(f"rec: {elecsim.name}: ")
    assert fails(3, "rec", detsim, tmp_path / "x.esd").startswith(f"rec: {detsim.name}: ")
    # Cut short, or not ROOT at all.
    short = tmp_path / "short.detsim"
    short.write_bytes(detsim.read_bytes()[: detsim.stat().st_size // 2])
    assert fails(3, "elecsim", short, tmp_path / "x.elecsim").startswith("elecsim: short.detsim: not a readable ROOT")
    junk = tmp_path / "junk.elecsim"
    junk.write_bytes(b"JRAW" + bytes(100))
    assert fails(3, "cal", junk, tmp_path / "x.calib").startswith("cal: junk.elecsim: not a readable ROOT file")
    # Events altered after they were written: the content checksum no longer matches the header's.
    for source, tree, branch, step in (
        (detsim, "truth", "energy_mev", "elecsim"),
        (elecsim, "readout", "timestamp_ns", "cal"),
        (calib, "events", "timestamp_ns", "rec"),
    ):
        bad = tmp_path / f"bad{source.suffix}"
        _tamper(source, bad, tree, branch)
        line = fails(3, step, bad, tmp_path / "x.out")
        assert line.startswith(f"{step}: {bad.name}: checksum mismatch: header says "), line
    assert not (tmp_path / "x.elecsim").exists() and not (tmp_path / "x.out").exists()  # never half a file


def test_a_missing_or_bad_parameter_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "x.detsim"
    assert fails(2, "detsim", "--param", "events=3", out) == (
        "detsim: bad parameter: parameter seed is required (--param seed=N)"
    )
    assert fails(2, "detsim", "--param", "seed=1", out) == (
        "detsim: bad parameter: parameter events is required (--param events=N)"
    )
    assert fails(2, "detsim", "--param", "seed=x", "--param", "events=3", out) == (
        "detsim: bad parameter: parameter seed='x' is not an integer"
    )
    assert fails(2, "detsim", "--param", "seed=1", "--param", "events=0", out).endswith("out of range (1..1000000)")
    assert fails(2, "detsim", "--param", "seed=1", "--param", "events=3", "--param", "generator=muon", out) == (
        "detsim: bad parameter: parameter generator='muon': expected one of ibd, gamma, radioactivity"
    )
    assert not out.exists()
    result = payload("elecsim", tmp_path / "a.detsim")  # N inputs then N outputs
    assert result.returncode == 2 and "expected N inputs then N outputs" in result.stderr
    assert fails(1, "elecsim", tmp_path / "absent.detsim", tmp_path / "x.elecsim") == (
        f"elecsim: error: no such file: {tmp_path / 'absent.detsim'}"
    )
