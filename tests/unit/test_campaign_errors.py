"""The one-line error of a bad steering file, made safe to show (terminal, log, Airflow's import errors), the
import-error message that lists every bad file of a folder, and the folder check both DAG files use."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rawflow.processing.campaigns import (
    CampaignError,
    InvalidCampaignFiles,
    campaign_error_line,
    campaign_files_message,
    check_campaign_folder,
    load_campaign,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "campaigns" / "rerec-2026-11.yaml"
LINE_MAX = 620  # the parts' bounds (200 + 80 + 120 + 200) and the separators


def test_a_plain_mistake_is_the_line_the_cli_prints() -> None:
    line = campaign_error_line("/srv/c/f.yaml", "backend", "slurm", "expected one of dirac, htcondor")
    assert line == "/srv/c/f.yaml: backend='slurm': expected one of dirac, htcondor"
    error = CampaignError("/srv/c/f.yaml", "backend", "slurm", "expected one of dirac, htcondor")
    assert str(error) == line and error.value == "slurm" and error.field == "backend"


@pytest.mark.parametrize("breaker", ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\x1b", "\u202e"])
def test_untrusted_parts_stay_on_one_line_and_are_quoted(breaker: str) -> None:
    line = campaign_error_line(f"/c/a{breaker}b.yaml", f"x{breaker}y", f"v{breaker}w", f"r{breaker}s")
    assert len(line.splitlines()) == 1 and line.isprintable(), line
    escaped = ascii(breaker)[1:-1]
    assert line.startswith(f"'/c/a{escaped}b.yaml': 'x{escaped}y'='v{escaped}w': r{escaped}s"), line


def test_names_that_could_fake_the_format_are_quoted() -> None:
    assert campaign_error_line("/c/a: b=c.yaml", "k", 1, "r") == "'/c/a: b=c.yaml': k=1: r"
    assert campaign_error_line("/c/it's.yaml", "k=v", None, "r") == "\"/c/it's.yaml\": 'k=v'=None: r"
    assert campaign_error_line(" /c/f.yaml", "", None, "r") == "' /c/f.yaml': ''=None: r"


def test_every_part_is_bounded_and_a_long_path_keeps_its_file_name() -> None:
    folder = "/c/" + "d" * 5000
    line = campaign_error_line(f"{folder}/broken.yaml", "f" * 500, "v" * 5000, "r" * 5000)
    assert len(line) <= LINE_MAX and len(line.splitlines()) == 1
    assert line.startswith("…") and "d/broken.yaml: " in line
    assert "='" + "v" * 117 + "…': " in line  # the value quoted, cut, marked
    # Escapes count towards the bound too.
    assert len(campaign_error_line("f.yaml", "k", "\u2028" * 5000, "r")) <= LINE_MAX
    assert len(campaign_error_line("\n" * 5000, "\n" * 5000, 1, "\n" * 5000)) <= LINE_MAX


def test_a_value_that_cannot_be_printed_is_named_by_its_type() -> None:
    class Odd:
        def __repr__(self) -> str:
            raise ValueError("no")

    assert campaign_error_line("f.yaml", "k", Odd(), "r") == "f.yaml: k=<Odd>: r"
    assert str(CampaignError("f.yaml", "k", Odd(), "r")) == "f.yaml: k=<Odd>: r"


def test_the_import_error_message_lists_one_line_per_file() -> None:
    lines = ["/c/a.yaml: backend='slurm': expected one of dirac, htcondor", "/c/b.yaml: name='x y': does not match"]
    message = campaign_files_message("/c", lines)
    head, *listed = message.splitlines()
    assert head == (
        "2 campaign steering files in /c do not validate: no DAG for them, the valid campaigns load "
        "(rawflow campaign check FILE gives the same line)"
    )
    assert listed == lines
    assert campaign_files_message("/c", lines[:1]).splitlines()[0].startswith("1 campaign steering file in /c does not")
    error = InvalidCampaignFiles("/c", lines)
    assert str(error) == message and error.lines == tuple(lines) and isinstance(error, ValueError)


def test_the_import_error_message_is_bounded_and_never_splits_a_line() -> None:
    lines = [f"/c/{i}.yaml: k=1: r" for i in range(120)] + ["/c/evil.yaml: k=1: r\nforged line"]
    message = campaign_files_message("/c/new\nline", lines, limit=50)
    head, *listed = message.splitlines()
    assert "'/c/new\\nline'" in head
    assert listed[:50] == lines[:50] and listed[50:] == ["… and 71 more"]
    assert "forged line" not in listed
    assert campaign_files_message("/c", ["x: k=1: r\nforged"]).splitlines()[1] == "x: k=1: r\\nforged"


def _campaign(folder: Path, file: str, name: str, *, old: str = "", new: str = "") -> Path:
    path = folder / file
    text = EXAMPLE.read_text().replace("rerec-2026-11", name)
    path.write_text(text.replace(old, new) if old else text)
    return path


def test_the_folder_check_keeps_the_good_files_and_gives_one_line_per_bad_one(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "a.yaml")
    _campaign(tmp_path, "b.yaml", "two", old="backend: dirac", new="backend: slurm")
    _campaign(tmp_path, "c.yaml", "rerec-2026-11")  # a second file with a's name
    # Mistakes YAML itself trips on, which must not escape as anything but the file's line:
    _campaign(tmp_path, "d.yaml", "four", old='first: "2026-11-21"', new="first: 2026-13-21")
    _campaign(tmp_path, "e.yaml", "five", old="priority: 5", new="priority: " + "9" * 5000)
    _campaign(tmp_path, "f.yaml", "six", old="steps:", new="steps: &s [*s]\nmore_steps:")
    _campaign(tmp_path, "g.yaml", "seven", old='first: "2026-11-21"', new="first: 2026-11-21")  # unquoted, valid
    (tmp_path / "notes.txt").write_text("not a campaign")

    checked = check_campaign_folder(tmp_path)
    assert [(p.name, c.name) for p, c in checked.campaigns] == [("a.yaml", "rerec-2026-11"), ("g.yaml", "seven")]
    assert all(len(line.splitlines()) == 1 and len(line) <= LINE_MAX for line in checked.errors)
    b, c, d, e, f = checked.errors
    assert b == f"{tmp_path / 'b.yaml'}: backend='slurm': expected one of dirac, htcondor"
    assert c == f"{tmp_path / 'c.yaml'}: name='rerec-2026-11': the same name as {tmp_path / 'a.yaml'}"
    assert d == f"{tmp_path / 'd.yaml'}: input.date_range.first='2026-13-21': not a date (YYYY-MM-DD)"
    assert e.startswith(f"{tmp_path / 'e.yaml'}: <yaml>=None: not loadable: Exceeds the limit")
    assert f.startswith(f"{tmp_path / 'f.yaml'}: <top>=None: cannot check: ")
    # The CLI's line is the same (load_campaign raises it).
    with pytest.raises(CampaignError) as info:
        load_campaign(tmp_path / "b.yaml")
    assert str(info.value) == b


def test_the_folder_check_of_a_missing_or_unreadable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_campaign_folder(tmp_path / "absent").errors == ()

    def refused(folder: Path) -> list[Path]:
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr("rawflow.processing.campaigns.campaign_files", refused)
    checked = check_campaign_folder(tmp_path)
    assert checked.campaigns == ()
    assert checked.errors == (f"{tmp_path}: <folder>=None: cannot list: Permission denied",)


@pytest.fixture
def no_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No $RAWFLOW_SITES and no local grid: the policy in force is config/sites.yaml, as for the CLI."""
    monkeypatch.delenv("RAWFLOW_SITES", raising=False)
    monkeypatch.setenv("RAWFLOW_VAR", str(tmp_path / "no-grid"))


def test_the_folder_check_rejects_unknown_sites_with_the_cli_s_line(
    tmp_path: Path, no_grid: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from rawflow.cli import main as cli

    folder = tmp_path / "campaigns"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "a.yaml")
    _campaign(folder, "b.yaml", "two", old="site: CNAF-STORM", new="site: NOWHERE-SE")
    _campaign(folder, "c.yaml", "three", old="[CNAF-STORM, IN2P3-DCACHE]", new="[CNAF-STORM, CNAF-STROM]")
    checked = check_campaign_folder(folder)
    assert [(p.name, c.name) for p, c in checked.campaigns] == [("a.yaml", "rerec-2026-11")]
    known = "CNAF-STORM, IHEP-EOS, IHEP-TAPE, IN2P3-DCACHE, JINR-EOS"
    assert checked.errors == (
        f"{folder / 'b.yaml'}: input.site='NOWHERE-SE': unknown site (known: {known})",
        f"{folder / 'c.yaml'}: output.destinations[1]='CNAF-STROM': unknown site (known: {known})",
    )
    # `rawflow campaign check` prints the same lines (and exits 2).
    capsys.readouterr()
    assert cli(["campaign", "check", str(folder / "a.yaml"), str(folder / "b.yaml"), str(folder / "c.yaml")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"rawflow: {line}" for line in checked.errors]


def test_the_folder_check_uses_the_policy_in_force(
    tmp_path: Path, no_grid: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from rawflow.sites import default_sites_path

    folder = tmp_path / "campaigns"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "a.yaml")
    # A policy without IN2P3 ($RAWFLOW_SITES, as the CLI reads it): a's destination is unknown there.
    raw = yaml.safe_load(default_sites_path().read_text())
    del raw["sites"]["IN2P3-DCACHE"]
    for policy in (raw.get("policies") or {}).values():
        for key in ("shares", "sites"):
            if isinstance(policy, dict) and isinstance(policy.get(key), dict):
                policy[key].pop("IN2P3-DCACHE", None)
    smaller = tmp_path / "sites.yaml"
    smaller.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("RAWFLOW_SITES", str(smaller))
    [line] = check_campaign_folder(folder).errors
    assert line.startswith(f"{folder / 'a.yaml'}: output.destinations[1]='IN2P3-DCACHE': unknown site")
    # An explicit policy wins over the environment, as --sites does for the CLI.
    assert check_campaign_folder(folder, sites=ROOT / "config" / "sites.yaml").errors == ()

    # A policy that cannot be read: no file's sites can be checked, so none gets a DAG; one line each.
    monkeypatch.setenv("RAWFLOW_SITES", str(tmp_path / "absent.yaml"))
    _campaign(folder, "b.yaml", "two")
    checked = check_campaign_folder(folder)
    assert checked.campaigns == ()
    assert [line.split(": <sites>=None: ")[0] for line in checked.errors] == [
        str(folder / "a.yaml"),
        str(folder / "b.yaml"),
    ]
    assert all(f"site names not checked: cannot read {tmp_path / 'absent.yaml'}: " in e for e in checked.errors)
    assert all(len(line.splitlines()) == 1 for line in checked.errors)
    # An empty folder reads no policy at all.
    assert check_campaign_folder(tmp_path / "empty").errors == ()
