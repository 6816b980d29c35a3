"""The keep-up payloads through their command line, as the pool's jobs run them: raw2rtraw → rec → dqm."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot

from rawflow.payloads import PAYLOAD_VERSION
from rawflow.payloads.rawformat import Truth, decode, synthesize

REPO = Path(__file__).resolve().parents[2]
PAYLOADS = REPO / "include" / "rawflow" / "payloads"
START_NS = 1_790_000_000 * 1_000_000_000
RUN = 1234
SIZES = (4096, 64, 2 << 20)


def payload(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "include")}
    return subprocess.run(
        [sys.executable, "-m", "rawflow.payloads", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def ok(*args: str | Path) -> dict[str, Any]:
    result = payload(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["version"] == PAYLOAD_VERSION
    return report


@dataclass
class Chain:
    dir: Path
    raw: list[Path]
    truth: list[Truth]
    rtraw: list[Path]
    esd: list[Path]
    reports: dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    work = tmp_path_factory.mktemp("payloads")
    raws, truths = [], []
    for sequence, size in enumerate(SIZES, start=1):
        data, truth = synthesize(run=RUN, stream="Physics", sequence=sequence, start_time_ns=START_NS, size=size)
        path = work / f"Daq.{RUN:06d}.Det.Physics.Raw.20260922000000.{sequence:05d}.dat"
        path.write_bytes(data)
        raws.append(path)
        truths.append(truth)
    reports: dict[str, list[dict[str, Any]]] = {"raw2rtraw": [], "rec": [], "dqm": []}
    rtraws = [raw.with_suffix(".rtraw") for raw in raws]
    esds = [raw.with_suffix(".esd") for raw in raws]
    for raw, rtraw, esd in zip(raws, rtraws, esds, strict=True):
        reports["raw2rtraw"].append(ok("raw2rtraw", raw, rtraw))
        reports["rec"].append(ok("rec", rtraw, esd))
    reports["dqm"].append(ok("dqm", work / "run.json", *rtraws, "--svg", work / "run.svg"))
    return Chain(work, raws, truths, rtraws, esds, reports)


def test_reports_carry_event_counts_equal_to_the_raw_files(chain: Chain) -> None:
    for raw, rtraw, esd, conversion, reconstruction in zip(
        chain.raw, chain.rtraw, chain.esd, chain.reports["raw2rtraw"], chain.reports["rec"], strict=True
    ):
        events = decode(raw.read_bytes()).events.count
        assert conversion["payload"] == "raw2rtraw" and reconstruction["payload"] == "rec"
        assert [(i["name"], i["events"], i["size"]) for i in conversion["inputs"]] == [
            (raw.name, events, raw.stat().st_size)
        ]
        assert [(o["name"], o["events"]) for o in conversion["outputs"]] == [(rtraw.name, events)]
        assert conversion["outputs"][0]["size"] == rtraw.stat().st_size
        assert [(o["name"], o["events"]) for o in reconstruction["outputs"]] == [(esd.name, events)]
    assert [f.name for f in chain.dir.iterdir() if f.name.startswith(".")] == []  # no temporary left behind


def test_rtraw_holds_the_raw_events_event_for_event(chain: Chain) -> None:
    for raw_path, rtraw in zip(chain.raw, chain.rtraw, strict=True):
        raw = decode(raw_path.read_bytes())
        with uproot.open(rtraw) as file:
            header = file["header"].arrays(library="np")
            assert (int(header["run"][0]), int(header["sequence"][0])) == (RUN, raw.header.sequence)
            assert int(header["event_count"][0]) == raw.events.count
            assert str(file["stream"]) == "Physics"
            assert json.loads(str(file["provenance"]))["input"] == raw_path.name
            # Deterministic stamps: the run's start time (not the clock) and a seeded (version 5) UUID.
            start = datetime.fromtimestamp(START_NS // 10**9, UTC).replace(tzinfo=None)
            assert file.file.root_directory.created_on == start
            assert file.key("events").created_on == start
            assert file.file.uuid.version == 5
            assert type(file.file.compression).__name__ == "ZSTD"  # cramjam's: the same bytes on every host
            tree = file["events"]
            assert tree.num_entries == raw.events.count
            for column in ("event_number", "timestamp_ns", "trigger_type"):
                assert np.array_equal(tree[column].array(library="np"), raw.events.events[column])
            assert np.array_equal(tree["nhit"].array(library="np"), raw.events.events["nhits"])
            for branch, column in (("hit_pmt", "pmt"), ("hit_time", "time"), ("hit_charge", "charge")):
                flat = np.concatenate([*tree[branch].array(library="np"), np.empty(0)])
                assert np.array_equal(flat, raw.events.hits[column])


def test_reconstructed_vertex_and_charge_match_the_generated_events(chain: Chain) -> None:
    big = SIZES.index(max(SIZES))
    truth = chain.truth[big]
    with uproot.open(chain.esd[big]) as file:
        esd = file["esd"].arrays(library="np")
    physics = esd["trigger_type"] == 1
    assert physics.sum() > 1000
    vertex = np.stack([esd["x"], esd["y"], esd["z"]], axis=1)[physics]
    true_vertex = truth.vertex_m[physics]
    error = np.linalg.norm(vertex - true_vertex, axis=1)
    assert np.median(error) < 3.0  # metres, from ~120 p.e. per event in a 17.7 m sphere
    radial_bias = np.median(np.linalg.norm(vertex, axis=1) - np.linalg.norm(true_vertex, axis=1))
    assert abs(radial_bias) < 0.6
    assert np.corrcoef(esd["total_charge"][physics], truth.energy_mev[physics])[0, 1] > 0.95
    assert np.all(esd["nhits"] == decode(chain.raw[big].read_bytes()).events.events["nhits"])


def test_dqm_summarises_the_run(chain: Chain) -> None:
    [report] = chain.reports["dqm"]
    summary = json.loads((chain.dir / "run.json").read_text())
    events = [decode(raw.read_bytes()).events for raw in chain.raw]
    total = sum(e.count for e in events)
    assert [(i["name"], i["events"], i["kind"]) for i in report["inputs"]] == [
        (r.name, e.count, "RTRAW") for r, e in zip(chain.rtraw, events, strict=True)
    ]
    assert [o["name"] for o in report["outputs"]] == ["run.json", "run.svg"]
    assert (summary["run"], summary["streams"], summary["events"]) == (RUN, ["Physics"], total)
    assert 800 < summary["rate_hz"] < 1200
    spectrum = summary["charge_spectrum"]
    assert len(spectrum["edges"]) == len(spectrum["counts"]) + 1
    assert sum(spectrum["counts"]) + spectrum["overflow"] == total
    assert sum(summary["events_by_trigger"].values()) == total
    # The 2.2 MeV neutron-capture line (≈ 133 p.e. plus dark noise) stands above its neighbourhood.
    counts = np.array(spectrum["counts"])
    peak = counts[26:30].mean()
    assert peak > counts[18:22].mean() * 0.8 and peak > 1.3 * counts[36:40].mean()
    assert (chain.dir / "run.svg").read_text().startswith("<svg")


def test_dqm_reads_esd_too_and_gives_the_same_numbers(chain: Chain) -> None:
    ok("dqm", chain.dir / "esd.json", *chain.esd)
    from_rtraw = json.loads((chain.dir / "run.json").read_text())
    from_esd = json.loads((chain.dir / "esd.json").read_text())
    for key in ("events", "rate_hz", "events_by_trigger", "first_timestamp_ns", "last_timestamp_ns"):
        assert from_esd[key] == from_rtraw[key]
    assert from_esd["charge_spectrum"]["counts"] == from_rtraw["charge_spectrum"]["counts"]


def test_a_rerun_gives_the_same_bytes(chain: Chain) -> None:
    # Let the wall clock move past a second: ROOT time stamps have one-second resolution.
    now = int(time.time())
    while int(time.time()) == now:
        time.sleep(0.05)
    raw, rtraw, esd = chain.raw[0], chain.rtraw[0], chain.esd[0]
    again = chain.dir / "again"
    again.mkdir()
    ok("raw2rtraw", raw, again / rtraw.name)
    ok("rec", again / rtraw.name, again / esd.name)
    ok("dqm", again / "run.json", *chain.rtraw)
    assert (again / rtraw.name).read_bytes() == rtraw.read_bytes()
    assert (again / esd.name).read_bytes() == esd.read_bytes()
    assert (again / "run.json").read_bytes() == (chain.dir / "run.json").read_bytes()


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: b"XXXX" + data[4:], "bad magic b'XXXX'"),
        (lambda data: data[:-16] + b"JEND" + (9999).to_bytes(4, "little") + data[-8:], "event count mismatch"),
    ],
    ids=["truncated", "magic", "count"],
)
def test_a_malformed_raw_file_exits_3_with_one_line(chain: Chain, tmp_path: Path, cut: Any, reason: str) -> None:
    bad = tmp_path / "Daq.001234.Det.Physics.Raw.20260922000000.00009.dat"
    bad.write_bytes(cut(chain.raw[0].read_bytes()))
    output = tmp_path / "out.rtraw"
    result = payload("raw2rtraw", bad, output)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"raw2rtraw: {bad.name}: ")
    assert reason in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]  # no output, no temporary


def test_rec_and_dqm_refuse_what_is_not_rtraw(chain: Chain, tmp_path: Path) -> None:
    result = payload("rec", chain.raw[0], tmp_path / "x.esd")
    assert (result.returncode, result.stderr.count("\n")) == (3, 1)
    assert result.stderr.startswith(f"rec: {chain.raw[0].name}: not a readable ROOT file")
    result = payload("dqm", tmp_path / "x.json", chain.rtraw[0], chain.raw[1])
    assert (result.returncode, result.stderr.count("\n")) == (3, 1)
    assert result.stderr.startswith(f"dqm: {chain.raw[1].name}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_other_errors_exit_1_with_one_line(tmp_path: Path) -> None:
    result = payload("raw2rtraw", tmp_path / "absent.dat", tmp_path / "x.rtraw")
    assert (result.returncode, result.stderr.count("\n")) == (1, 1)
    assert result.stderr.startswith("raw2rtraw: error: no such file")
    result = payload("raw2rtraw", tmp_path)
    assert result.returncode == 2  # usage


def test_dqm_rate_counts_the_time_the_files_cover_not_the_gaps(tmp_path: Path) -> None:
    rtraws = []
    for sequence in (1, 2):
        start = START_NS + (sequence - 1) * 3600 * 10**9  # files an hour apart
        data, _ = synthesize(run=RUN, stream="Physics", sequence=sequence, start_time_ns=start, size=256 * 1024)
        (tmp_path / f"{sequence}.dat").write_bytes(data)
        ok("raw2rtraw", tmp_path / f"{sequence}.dat", tmp_path / f"{sequence}.rtraw")
        rtraws.append(tmp_path / f"{sequence}.rtraw")
    ok("dqm", tmp_path / "run.json", *rtraws)
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["time_span_s"] > 3600
    assert 0 < summary["live_time_s"] < 1
    assert 800 < summary["rate_hz"] < 1200


def test_dqm_refuses_to_mix_runs(chain: Chain, tmp_path: Path) -> None:
    data, _ = synthesize(run=RUN + 1, stream="Physics", sequence=1, start_time_ns=START_NS, size=4096)
    (tmp_path / "other.dat").write_bytes(data)
    ok("raw2rtraw", tmp_path / "other.dat", tmp_path / "other.rtraw")
    result = payload("dqm", tmp_path / "x.json", chain.rtraw[0], tmp_path / "other.rtraw")
    assert result.returncode == 1 and "one run at a time" in result.stderr


def test_payloads_import_only_the_standard_library_numpy_uproot_and_themselves() -> None:
    allowed = set(sys.stdlib_module_names) | {"numpy", "uproot", "awkward"}
    offenders = []
    for path in PAYLOADS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if not (
                    name.split(".")[0] in allowed or name == "rawflow.payloads" or name.startswith("rawflow.payloads.")
                ):
                    offenders.append(f"{path.name}:{node.lineno} {name}")
    assert offenders == []


def test_one_job_over_several_files_and_its_parameters(chain: Chain, tmp_path: Path) -> None:
    """A campaign sub-job: N inputs then N outputs, each output made from its own input (the same events as
    alone); --param reaches the payload: in the report, the ESD provenance, and
    vertex_scale in the vertex."""
    outs = [tmp_path / f"multi{i}.esd" for i in range(2)]
    report = ok("rec", *chain.rtraw[:2], *outs)
    assert [o["name"] for o in report["outputs"]] == [o.name for o in outs]
    assert [i["events"] for i in report["inputs"]] == [o["events"] for o in report["outputs"]]
    for rtraw, alone, together in zip(chain.rtraw[:2], chain.esd[:2], outs, strict=True):
        with uproot.open(together) as file, uproot.open(alone) as single:
            assert json.loads(str(file["provenance"]))["input"] == rtraw.name
            for branch in ("event_number", "total_charge", "r"):
                np.testing.assert_array_equal(
                    file["esd"][branch].array(library="np"), single["esd"][branch].array(library="np")
                )
    scaled = tmp_path / "scaled.esd"
    report = ok("rec", "--param", "vertex_scale=3.0", "--param", "seed=7", chain.rtraw[0], scaled)
    assert report["parameters"] == {"vertex_scale": "3.0", "seed": "7"}
    with uproot.open(scaled) as file, uproot.open(chain.esd[0]) as plain:
        assert json.loads(str(file["provenance"]))["parameters"] == {"vertex_scale": "3.0", "seed": "7"}
        assert "parameters" not in json.loads(str(plain["provenance"]))
        r_scaled, r_plain = file["esd"]["r"].array(library="np"), plain["esd"]["r"].array(library="np")
    np.testing.assert_allclose(r_scaled, r_plain * 2.0, rtol=1e-5)  # 3.0 / the default 1.5
    odd = payload("rec", chain.rtraw[0], chain.rtraw[1], scaled)
    assert odd.returncode == 2 and "N inputs then N outputs" in odd.stderr
    bad = payload("rec", "--param", "vertex_scale=fast", chain.rtraw[0], tmp_path / "bad.esd")
    assert bad.returncode == 1 and "vertex_scale='fast' is not a number" in bad.stderr
