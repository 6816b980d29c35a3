"""The ops CLI's errors, exit codes, JSON shapes and tables, on a real SQLite catalogue and quarantine.

Exit codes (README, cli docstring): 0 ok; 1 not found or failed; 2 usage or configuration error. An error is one
line on stderr, or with --json one object {"error": ..., "code": N} on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from rawflow.catalogue import get_catalogue
from rawflow.catalogue.base import FileRecord, ReplicaState
from rawflow.cli import main
from rawflow.messages import Reason
from rawflow.naming import DataType, RawFileName, lfn_for, parse_block_id
from rawflow.quarantine import Quarantine, QuarantineEntry
from rawflow.sites import default_sites_path

REPO = Path(__file__).resolve().parents[2]
DAY = "20261123"


def record(seq: int, size: int = 1000) -> FileRecord:
    day = parse_block_id(DAY)
    name = RawFileName.build(
        daq="Daq",
        run_number=1234,
        stream_type="Data",
        stream_name="Physics",
        file_tag="Tag",
        # written at 23:50 on the 22nd, landed in the 23rd's directory: a bare name must still resolve
        file_time=datetime(2026, 11, 22, 23, 50, seq),
        file_sequence=seq,
        data_type=DataType.RAW,
    ).name
    return FileRecord(
        lfn=lfn_for(DataType.RAW, day, name),
        size=size,
        adler32=f"{seq:08x}",
        data_type=DataType.RAW,
        block_id=DAY,
        run_number=1234,
        stream="Physics",
        received_at=datetime(2026, 11, 23, 1, 0, seq, tzinfo=UTC),
    )


@pytest.fixture
def catalogue_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RAWFLOW_VAR", str(tmp_path / "no-grid"))
    monkeypatch.delenv("RAWFLOW_SITES", raising=False)
    monkeypatch.delenv("RAWFLOW_CATALOGUE_URL", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    catalogue = get_catalogue(url)
    try:
        catalogue.register_files([record(i, 1000 * (i + 1)) for i in range(6)], site="IHEP-EOS")
    finally:
        catalogue.close()
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, text: str) -> None:
    got, out, err = run(capsys, *argv)
    assert got == code, (out, err)
    assert out == "" and err.count("\n") == 1 and err.startswith("rawflow: ") and text in err, err
    assert "Traceback" not in err
    got, out, err = run(capsys, *argv, "--json")
    assert got == code and err == ""
    assert json.loads(out) == {"error": json.loads(out)["error"], "code": code}
    assert text in json.loads(out)["error"] and out.count("\n") == 1


def test_unknown_quarantine_reason(capsys: pytest.CaptureFixture[str], catalogue_url: str) -> None:
    assert_one_line_error(
        capsys,
        ["quarantine", "list", "--reason", "nosuch", "--catalogue", catalogue_url],
        2,
        "unknown quarantine reason 'nosuch'; known: ",
    )


def test_limit_must_be_positive(capsys: pytest.CaptureFixture[str], catalogue_url: str) -> None:
    for limit in ("-5", "0", "many"):
        assert_one_line_error(
            capsys, ["quarantine", "list", "--limit", limit, "--catalogue", catalogue_url], 2, "argument --limit"
        )


def test_unknown_site_and_unknown_block(capsys: pytest.CaptureFixture[str], catalogue_url: str) -> None:
    assert_one_line_error(
        capsys,
        ["block", "status", DAY, "--site", "NOWHERE", "--catalogue", catalogue_url],
        2,
        "site='NOWHERE': unknown site; known: IHEP-EOS",
    )
    assert_one_line_error(
        capsys, ["block", "plan", DAY, "--site", "NOWHERE", "--catalogue", catalogue_url], 2, "unknown site"
    )
    assert_one_line_error(
        capsys, ["block", "status", "20261124", "--catalogue", catalogue_url], 1, "RAW-20261124 is not in the catalogue"
    )
    assert_one_line_error(capsys, ["block", "status", "2026112", "--catalogue", catalogue_url], 2, "expected YYYYMMDD")
    assert_one_line_error(capsys, ["block", "frobnicate", DAY], 2, "invalid choice: 'frobnicate'")


def test_block_status_for_one_site(capsys: pytest.CaptureFixture[str], catalogue_url: str) -> None:
    code, out, _ = run(capsys, "block", "status", DAY, "--site", "IN2P3-DCACHE", "--catalogue", catalogue_url, "--json")
    assert code == 0
    assert list(json.loads(out)["sites"]) == ["IN2P3-DCACHE"]


def test_file_show_takes_a_bare_file_name(capsys: pytest.CaptureFixture[str], catalogue_url: str) -> None:
    wanted = record(3)
    name = wanted.lfn.rsplit("/", 1)[1]
    code, out, err = run(capsys, "file", "show", name, "--catalogue", catalogue_url, "--json")
    assert code == 0, err
    assert json.loads(out)["lfn"] == wanted.lfn
    code, out, err = run(capsys, "file", "show", name, "--catalogue", catalogue_url)
    assert code == 0 and wanted.lfn in out and "received 2026-11-23 01:00:03 UTC" in out
    missing = name.replace(".00003.", ".00099.")
    assert_one_line_error(
        capsys, ["file", "show", missing, "--catalogue", catalogue_url], 1, f"file {missing} is not in the catalogue"
    )
    assert_one_line_error(capsys, ["file", "show", "not-a-raw-file", "--catalogue", catalogue_url], 2, "invalid")


def test_quarantine_times_carry_their_zone(capsys: pytest.CaptureFixture[str], catalogue_url: str) -> None:
    quarantine = Quarantine(catalogue_url)
    quarantine.create_schema()
    quarantine.add(
        [
            QuarantineEntry(
                topic="rawflow.raw.announce",
                partition=0,
                offset=7,
                key=None,
                payload=b"{}",
                reason=Reason.MISSING_FIELD,
                text="missing field 'lfn'",
                received_at=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
            )
        ]
    )
    code, out, err = run(capsys, "quarantine", "list", "--catalogue", catalogue_url, "--wide")
    assert code == 0, err
    assert "2026-11-23 08:00:00 UTC" in out and "missing field 'lfn'" in out
    code, out, _ = run(
        capsys, "quarantine", "list", "--reason", Reason.MISSING_FIELD.value, "--catalogue", catalogue_url, "--json"
    )
    assert code == 0 and [e["offset"] for e in json.loads(out)] == [7]


def test_block_help_describes_each_action() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rawflow.cli", "block", "--help"], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert done.returncode == 0
    for action in ("status ID", "close ID", "plan ID", "retransfer ID"):
        assert action in done.stdout
    assert "exit codes: 0 ok; 1 not found or failed; 2 usage" in done.stdout


def test_tables_fit_the_terminal_and_never_cut_identifiers(tmp_path: Path) -> None:
    env = {**os.environ, "RAWFLOW_VAR": str(tmp_path / "no-grid"), "COLUMNS": "70"}
    env.pop("RAWFLOW_SITES", None)

    def sites(*extra: str, **more: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "rawflow.cli", "sites", *extra],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**env, **more},
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    narrow = sites()
    assert max(len(line) for line in narrow.splitlines()) <= 70
    assert "…" not in narrow
    assert "left out to fit 70 columns: route" in narrow
    # a URL prefix that does not fit its column wraps: all of it is still there, in the last column
    last_column = "".join(line.split("│")[-2].strip() for line in narrow.splitlines() if line.count("│") > 2)
    assert "root://ccdcache.in2p3.fr:1094//pnfs/in2p3" in last_column
    wide = sites("--wide")
    assert max(len(line) for line in wide.splitlines()) > 70
    assert "root://ccdcache.in2p3.fr:1094//pnfs/in2p3" in wide and "CNAF-STORM → JINR-EOS" in wide


def test_sites_shows_roles_not_share_zero(capsys: pytest.CaptureFixture[str], catalogue_url: str) -> None:
    code, out, _ = run(capsys, "sites", "--wide")
    assert code == 0
    tape = next(line for line in out.splitlines() if "IHEP-TAPE" in line)
    assert "every file (archive)" in tape and "share 0" not in tape
    assert "receiving day in UTC" in out


def test_sites_reads_the_running_grid_policy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a grid running (state.json names live processes), `rawflow sites` shows the grid's own policy."""
    var = tmp_path / "var"
    (var / "grid").mkdir(parents=True)
    policy = yaml.safe_load(default_sites_path().read_text())
    policy["sites"]["IHEP-EOS"]["url_prefix"] = "root://127.0.0.1:31094//eos"
    grid_sites = var / "grid" / "sites.yaml"
    grid_sites.write_text(yaml.safe_dump(policy))
    state = {"components": {"kafka": {"pid": os.getpid()}}, "values": {"sites_path": str(grid_sites)}}
    (var / "grid" / "state.json").write_text(json.dumps(state))
    monkeypatch.setenv("RAWFLOW_VAR", str(var))
    monkeypatch.delenv("RAWFLOW_SITES", raising=False)
    code, out, _ = run(capsys, "sites", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["source"] == str(grid_sites)
    assert shown["sites"]["IHEP-EOS"]["url_prefix"] == "root://127.0.0.1:31094//eos"
    # Once nothing of that grid runs, the repository's policy again.
    state["components"] = {}
    (var / "grid" / "state.json").write_text(json.dumps(state))
    code, out, _ = run(capsys, "sites", "--json")
    assert json.loads(out)["source"] == str(default_sites_path())


def test_plan_of_a_fresh_block(capsys: pytest.CaptureFixture[str], catalogue_url: str) -> None:
    """Before any copy: every destination's share and the archive, from the Tier-0; JINR after CNAF."""
    code, out, err = run(capsys, "block", "plan", DAY, "--catalogue", catalogue_url, "--json")
    assert code == 0, err
    plan = json.loads(out)
    sizes = {r.lfn: r.size for r in (record(i, 1000 * (i + 1)) for i in range(6))}
    assert plan["block"] == f"RAW-{DAY}" and plan["files"] == 6 and plan["bytes"] == sum(sizes.values())
    cnaf, jinr, tape = plan["sites"]["CNAF-STORM"], plan["sites"]["JINR-EOS"], plan["sites"]["IHEP-TAPE"]
    assert (cnaf["files"], cnaf["bytes"], cnaf["sources"]) == (6, sum(sizes.values()), {"IHEP-EOS": 6})
    assert jinr["route"] == ["CNAF-STORM", "JINR-EOS"]
    assert jinr["now"]["files"] == 0 and jinr["after_hop"]["files"] == 6 and jinr["sources"] == {"CNAF-STORM": 6}
    assert (tape["kind"], tape["files"]) == ("archive", 6)
    from rawflow.sites import load_sites

    in2p3 = load_sites(default_sites_path())["IN2P3-DCACHE"]
    kept = [lfn for lfn in sizes if in2p3.keeps(lfn)]
    assert plan["sites"]["IN2P3-DCACHE"]["files"] == len(kept)
    assert plan["sites"]["IN2P3-DCACHE"]["bytes"] == sum(sizes[lfn] for lfn in kept)
    assert cnaf["rate"] is None and cnaf["expected_seconds"] is None  # nothing measured yet


def test_plan_measures_the_rate_from_validated_replicas(capsys: pytest.CaptureFixture[str], catalogue_url: str) -> None:
    """Half of CNAF's files validated a minute apart: the rest is planned, at the rate they came in."""
    catalogue = get_catalogue(catalogue_url)
    try:
        lfns = sorted(r.lfn for r in (record(i) for i in range(6)))
        catalogue.set_replica_state(lfns[:3], "CNAF-STORM", ReplicaState.VALIDATED)
    finally:
        catalogue.close()
    code, out, _ = run(capsys, "block", "plan", DAY, "--site", "CNAF-STORM", "--catalogue", catalogue_url, "--json")
    assert code == 0
    cnaf = json.loads(out)["sites"]["CNAF-STORM"]
    assert list(json.loads(out)["sites"]) == ["CNAF-STORM"]
    assert cnaf["done"] == 3 and cnaf["files"] == 3 and sorted(cnaf["waiting"]) == []
    # Three replicas validated within the same second: too short a span to measure, so no estimate.
    assert cnaf["rate"] is None or cnaf["rate"]["replicas"] == 3
    code, out, _ = run(capsys, "block", "plan", DAY, "--site", "CNAF-STORM", "--catalogue", catalogue_url)
    assert code == 0 and "nothing is moved" in out and "UTC" in out


def test_rate_over_validation_span() -> None:
    from rawflow.dry_run import measured_rate

    class Stamps:
        """Replica states as the catalogue returns them, for measured_rate alone."""

        def __init__(self) -> None:
            base = datetime(2026, 11, 23, 10, tzinfo=UTC)
            from rawflow.catalogue.base import ReplicaInfo

            self.states = {
                f"/juno/raw/2026/1123/f{i}": {
                    "CNAF-STORM": ReplicaInfo(ReplicaState.VALIDATED, None, base + timedelta(seconds=10 * i))
                }
                for i in range(3)
            }

        def replica_states(self, *, block: tuple[DataType, str], site: str) -> dict[str, object]:
            return self.states if block[1] == DAY else {}

        def files_in_block(self, data_type: DataType, block_id: str) -> list[FileRecord]:
            return []

    sizes = {f"/juno/raw/2026/1123/f{i}": 1_000_000 for i in range(3)}
    rate = measured_rate(
        Stamps(),  # type: ignore[arg-type]
        DataType.RAW,
        DAY,
        "CNAF-STORM",
        sizes,
        "UTC",
        datetime(2026, 11, 23, 10, 5, tzinfo=UTC),
    )
    assert rate is not None
    # 2 MB after the first validation, over 20 s
    assert rate.bytes_per_second == pytest.approx(100_000) and rate.replicas == 3
