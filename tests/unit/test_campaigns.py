"""Campaign steering files: every kind of mistake gives its one line; splitters give exact sub-job counts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from rawflow.processing.campaigns import (
    CampaignError,
    load_campaign,
    parse_campaign,
    split,
    split_by_files,
    split_by_parameters,
    split_by_run,
    sub_job_key,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "campaigns" / "rerec-2026-11.yaml"
SITES = ["IHEP-EOS", "IHEP-TAPE", "CNAF-STORM", "JINR-EOS", "IN2P3-DCACHE"]


def lfn(run: int, seq: int, day: str = "1121") -> str:
    return f"/juno/rtraw/2026/{day}/JUNO.{run:06d}.Physics.Global.ds-0.20261121083000.{seq:05d}.rtraw"


def base() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return document


def test_the_example_campaign_loads() -> None:
    campaign = load_campaign(EXAMPLE, known_sites=SITES)
    assert campaign.dag_id == "rawflow_campaign_rerec-2026-11"
    assert campaign.input_blocks(today=__import__("datetime").date(2026, 12, 2)) == ["20261121", "20261122", "20261123"]
    # An open range stops at today; a new day joins when it comes.
    assert campaign.input_blocks(today=__import__("datetime").date(2026, 11, 22)) == ["20261121", "20261122"]


def edit(path: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(base())
    parts = path.split(".")
    target = document
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is DELETE:
        del target[parts[-1]]
    else:
        target[int(parts[-1]) if parts[-1].isdigit() else parts[-1]] = value
    return document


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("name", "bad name!", "f.yaml: name='bad name!': does not match"),
        ("kind", "simulation", "f.yaml: kind='simulation': expected one of reprocessing, mc, analysis"),
        ("backend", "slurm", "f.yaml: backend='slurm': expected one of dirac, htcondor"),
        ("steps.0.payload", "reco", "f.yaml: steps[0].payload='reco': expected one of raw2rtraw, rec, dqm"),
        ("steps.0.payload", "raw2rtraw", "f.yaml: steps[0].payload='raw2rtraw': reads RAW, gets RTRAW"),
        ("steps.0.colour", "red", "f.yaml: steps[0].colour='red': unknown field"),
        ("splitter", {"by": "files"}, "f.yaml: splitter.files_per_job=None: missing"),
        ("splitter", {"by": "files", "files_per_job": 0}, "f.yaml: splitter.files_per_job=0: 0 is less than"),
        ("output.destinations", ["MARS-SE"], "f.yaml: output.destinations[0]='MARS-SE': unknown site"),
        ("output.data_type", "RTRAW", "f.yaml: output.data_type='RTRAW': the last step writes ESD"),
        (
            "input.date_range",
            {"first": "2026-11-23", "last": "2026-11-21"},
            "input.date_range.last='2026-11-21': before first",
        ),
        ("input.date_range", {"first": "2026-13-40"}, "f.yaml: input.date_range.first='2026-13-40': not a date"),
        ("input.blocks", ["20261121"], "f.yaml: input="),
        ("input", DELETE, "f.yaml: input=None: missing"),
        ("priority", 99, "f.yaml: priority=99: 99 is greater than the maximum of 10"),
    ],
)
def test_each_mistake_is_one_line_naming_file_field_and_value(path: str, value: Any, message: str) -> None:
    with pytest.raises(CampaignError) as info:
        parse_campaign(edit(path, value), source="f.yaml", known_sites=SITES)
    text = str(info.value)
    assert "\n" not in text
    assert message in text, text


def test_analysis_needs_a_user_and_a_file_that_is_not_yaml_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match=r"f.yaml: user=None: missing"):
        parse_campaign(edit("kind", "analysis"), source="f.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(CampaignError, match=r"bad.yaml: line 2=None: not YAML"):
        load_campaign(bad)
    with pytest.raises(CampaignError, match=r"absent.yaml: <file>=None: cannot read"):
        load_campaign(tmp_path / "absent.yaml")


def test_split_by_files_exact_counts() -> None:
    files = [lfn(1000 + i % 3, i) for i in range(10)]
    assert [len(g) for g in split_by_files(files, 1)] == [1] * 10
    assert [len(g) for g in split_by_files(files, 3)] == [3, 3, 3, 1]
    assert len(split_by_files(files, 10)) == 1 and split_by_files([], 4) == []
    assert sorted(f for g in split_by_files(files, 4) for f in g) == sorted(files)


def test_split_by_run_exact_counts() -> None:
    files = [lfn(1000 + i % 3, i) for i in range(10)]  # runs 1000 (4 files), 1001 (3), 1002 (3)
    groups = split_by_run(files)
    assert [len(g) for g in groups] == [4, 3, 3]
    assert {f.split(".")[1] for f in groups[0]} == {"001000"}


def test_split_by_two_parameters_exact_counts() -> None:
    combos = split_by_parameters({"energy": [1, 2, 5], "seed": [11, 12]})
    assert len(combos) == 6 and combos[0] == {"energy": 1, "seed": 11} and combos[-1] == {"energy": 5, "seed": 12}
    campaign = parse_campaign(
        edit(
            "splitter", {"by": "parameters", "files_per_job": 2, "parameters": {"energy": [1, 2, 5], "seed": [11, 12]}}
        ),
        source="f.yaml",
    )
    jobs = split(campaign, campaign.steps[0], [lfn(1000, i) for i in range(4)])
    assert len(jobs) == 2 * 6 and len({j.key for j in jobs}) == 12


def test_sub_job_keys_are_deterministic_and_valid() -> None:
    campaign = load_campaign(EXAMPLE)
    files = [lfn(1000, i) for i in range(3)]
    first = split(campaign, campaign.steps[0], files)
    again = split(campaign, campaign.steps[0], list(reversed(files)))
    assert [j.key for j in first] == [j.key for j in again]
    assert len({j.key for j in first}) == 3
    assert sub_job_key("a", "rec", ["x"], {}) != sub_job_key("b", "rec", ["x"], {})
    from rawflow.compute.base import JOB_KEY

    assert all(JOB_KEY.fullmatch(j.key) for j in first)


def test_a_metadata_query_keeps_only_matching_files() -> None:
    document = edit("input", {"data_type": "RTRAW", "site": "CNAF-STORM", "query": {"runs": [1001]}})
    campaign = parse_campaign(document, source="f.yaml")
    jobs = split(campaign, campaign.steps[0], [lfn(1000 + i % 2, i) for i in range(6)])
    assert len(jobs) == 3


def test_campaign_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rawflow.cli import main as cli

    assert cli(["campaign", "check", str(EXAMPLE)]) == 0
    assert "ok: reprocessing 'rerec-2026-11'" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("files_per_job: 1", "files_per_job: many"))
    assert cli(["campaign", "check", str(bad), str(EXAMPLE)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"rawflow: {bad}: splitter.files_per_job='many': expected integer\n"
    assert "ok:" in captured.out  # the good file is still checked
