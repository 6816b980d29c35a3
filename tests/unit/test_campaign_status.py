"""The ProdSys table: campaign status from the jobs table, in the API's rows, the page (escaped) and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rawflow.cli import main as cli
from rawflow.processing.campaign_round import campaigns_overview
from rawflow.processing.campaigns import load_campaign, split
from rawflow.processing.jobs import JobRecord, JobStore
from rawflow.processing.planning import PAYLOAD_VERSIONS, JobPhase, PlannedJob

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "<script>alert('x')</script> bad header"


def lfn(seq: int) -> str:
    return f"/juno/rtraw/2026/1121/JUNO.005021.Physics.Global.ds-0.20261121083000.{seq:05d}.rtraw"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, str]:
    folder = tmp_path / "campaigns"
    folder.mkdir()
    shutil.copy(ROOT / "config" / "campaigns" / "rerec-2026-11.yaml", folder / "a.yaml")
    (folder / "z.yaml").write_text("name: x\nkind: mc\n")
    campaign = load_campaign(folder / "a.yaml")
    url = f"sqlite:///{tmp_path}/jobs.db"
    store = JobStore(url)
    subs = split(campaign, campaign.steps[0], [lfn(i) for i in range(4)])
    records = [
        JobRecord.planned(
            PlannedJob(s.key, "rec", PAYLOAD_VERSIONS["rec"], s.inputs, (s.inputs[0] + ".out",), "20261121", 5021),
            "dirac",
        )
        for s in subs
    ]
    records[0] = records[0].evolve(state=JobPhase.DONE)
    records[1] = records[1].evolve(state=JobPhase.DONE)
    records[2] = records[2].evolve(state=JobPhase.PROBLEMATIC, reason=HOSTILE)
    records[3] = records[3].evolve(state=JobPhase.RUNNING)
    store.upsert(records)
    store.close()
    return folder, url


def test_overview_rows(setup: tuple[Path, str]) -> None:
    folder, url = setup
    rows = campaigns_overview(folder, JobStore(url))
    assert [(r["id"], r["status"]) for r in rows] == [(1, "Problematic"), (2, "Invalid")]
    first = rows[0]
    assert (first["files"], first["processed"], first["processed_pct"]) == (4, 2, 50.0)
    assert first["jobs"] == {"done": 2, "problematic": 1, "running": 1}
    assert first["failures"][0]["reason"] == HOSTILE
    assert "z.yaml: " in rows[1]["error"] and "missing" in rows[1]["error"]


def test_page_escapes_and_cli_shows_the_table(setup: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    from rawflow_airflow.ui.pages import make_templates

    folder, url = setup
    rows = campaigns_overview(folder, JobStore(url))
    html = (
        make_templates()
        .get_template("campaigns.html")
        .render(rows=rows, chosen=rows[0], base="/rawflow", airflow="/", page="campaigns")
    )
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "50.0%" in html
    assert cli(["campaign", "list", "--folder", str(folder), "--jobs-db", url, "--catalogue", url, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in listed] == ["Problematic", "Invalid"]
    assert (
        cli(["campaign", "status", "rerec-2026-11", "--folder", str(folder), "--jobs-db", url, "--catalogue", url]) == 0
    )
    out = capsys.readouterr().out
    assert "rerec-2026-11" in out and "50.0%" in out and "bad header" in out
    assert cli(["campaign", "status", "nope", "--folder", str(folder), "--jobs-db", url, "--catalogue", url]) == 2


def test_campaign_metrics(setup: tuple[Path, str]) -> None:
    from rawflow.monitoring import MonitoringStore
    from rawflow_airflow.metrics import campaign_metrics

    folder, url = setup
    jobs, processed = list(campaign_metrics(MonitoringStore(url), str(folder)))
    values = {(s.labels["campaign"], s.labels["state"]): s.value for s in jobs.samples}
    assert values["rerec-2026-11", "done"] == 2 and values["rerec-2026-11", "queued"] == 0
    assert [(s.labels["campaign"], s.value) for s in processed.samples] == [("rerec-2026-11", 0.5)]
