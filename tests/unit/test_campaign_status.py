"""The ProdSys table: campaign status from the jobs table and the outputs' replicas (Processed % counts an input
once its output is validated at every destination SE), in the API's rows, the page (escaped) and the CLI."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rawflow.catalogue.base import FileRecord, ReplicaState
from rawflow.catalogue.sql import SqlCatalogue
from rawflow.cli import main as cli
from rawflow.naming import DataType
from rawflow.processing.campaign_round import campaign_output_lfn, campaigns_overview
from rawflow.processing.campaigns import load_campaign, split
from rawflow.processing.jobs import JobRecord, JobStore
from rawflow.processing.planning import PAYLOAD_VERSIONS, JobPhase, PlannedJob
from tests.fixtures.view import SqliteSources, view_client

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
            PlannedJob(s.key, "rec", PAYLOAD_VERSIONS["rec"], s.inputs, (out(s.inputs[0]),), "20261121", 5021),
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
    # The two done jobs' outputs: registered at the Tier-0 and validated at both destination SEs.
    catalogue = SqlCatalogue(url)
    done = [out(r.inputs[0]) for r in records[:2]]
    catalogue.register_files([esd(lfn) for lfn in done], site="IHEP-EOS", state=ReplicaState.VALIDATED)
    for site in campaign.destinations:
        catalogue.set_replica_state(done, site, ReplicaState.VALIDATED)
    catalogue.close()
    return folder, url


def out(rtraw: str) -> str:
    return campaign_output_lfn(rtraw, DataType.ESD, "rerec-2026-11")


def esd(lfn: str) -> FileRecord:
    return FileRecord(
        lfn=lfn,
        size=100,
        adler32="00000001",
        data_type=DataType.ESD,
        block_id="20261121",
        run_number=5021,
        stream="Global",
        received_at=datetime.now(UTC),
    )


def test_overview_rows(setup: tuple[Path, str]) -> None:
    folder, url = setup
    rows = campaigns_overview(folder, JobStore(url), SqlCatalogue(url))
    assert [(r["id"], r["status"]) for r in rows] == [(1, "Problematic"), (2, "Invalid")]
    first = rows[0]
    assert (first["files"], first["processed"], first["processed_pct"]) == (4, 2, 50.0)
    assert first["jobs"] == {"done": 2, "problematic": 1, "running": 1}
    assert first["failures"][0]["reason"] == HOSTILE
    assert "z.yaml: " in rows[1]["error"] and "missing" in rows[1]["error"]


def test_page_escapes_and_cli_shows_the_table(
    setup: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, url = setup
    monkeypatch.setenv("AIRFLOW_VAR_RAWFLOW_CAMPAIGNS_DIR", str(folder))
    with view_client(SqliteSources(url)) as client:
        html = client.get("/campaigns", params={"name": "rerec-2026-11"}).text
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "50.0%" in html
    assert "2 of 2 outputs there" in html  # the drill-down: outputs validated at every destination
    assert '<td>IN2P3-DCACHE</td><td class="pending">0</td>' in html
    assert "refreshes every 60 s" in html and "location.reload(); }, 60000)" in html
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
    opened: list[SqlCatalogue] = []

    def catalogue() -> SqlCatalogue:
        opened.append(SqlCatalogue(url))
        return opened[-1]

    again = list(campaign_metrics(MonitoringStore(url), str(folder), catalogue=catalogue))
    assert len(opened) == 1 and [(s.labels, s.value) for s in again[1].samples] == [
        ({"campaign": "rerec-2026-11"}, 0.5)
    ]
    jobs, processed = list(campaign_metrics(MonitoringStore(url), str(folder)))
    values = {(s.labels["campaign"], s.labels["state"]): s.value for s in jobs.samples}
    assert values["rerec-2026-11", "done"] == 2 and values["rerec-2026-11", "queued"] == 0
    assert [(s.labels["campaign"], s.value) for s in processed.samples] == [("rerec-2026-11", 0.5)]


def test_processed_counts_outputs_validated_at_every_destination_not_job_states(setup: tuple[Path, str]) -> None:
    """A done job whose output is still being copied to one destination is not processed: no 100 % while an
    output replica is pending anywhere."""
    folder, url = setup
    store, catalogue = JobStore(url), SqlCatalogue(url)
    done = sorted(out(r.inputs[0]) for r in store.list_jobs() if r.state is JobPhase.DONE)
    assert len(done) == 2
    # One output's copy at IN2P3 is queued again (a retransfer): that input is no longer processed.
    catalogue.set_replica_state([done[0]], "IN2P3-DCACHE", ReplicaState.COPYING)
    (row,) = [r for r in campaigns_overview(folder, store, catalogue) if r["status"] != "Invalid"]
    assert (row["files"], row["processed"], row["processed_pct"]) == (4, 1, 25.0)
    assert (row["outputs"], row["replicated"], row["pending"]) == (2, 1, {"CNAF-STORM": 0, "IN2P3-DCACHE": 1})
    # Every job done, every output at CNAF, one still not validated at IN2P3: Running at 75 %, never Done.
    records = store.list_jobs()
    store.upsert([r.evolve(state=JobPhase.DONE, reason=None) for r in records if r.state is not JobPhase.DONE])
    later = [out(r.inputs[0]) for r in records if r.state is not JobPhase.DONE]
    catalogue.register_files([esd(lfn) for lfn in later], site="IHEP-EOS", state=ReplicaState.VALIDATED)
    for site in ("CNAF-STORM", "IN2P3-DCACHE"):
        catalogue.set_replica_state(later, site, ReplicaState.VALIDATED)
    (row,) = [r for r in campaigns_overview(folder, store, catalogue) if r["status"] != "Invalid"]
    assert (row["status"], row["processed"], row["processed_pct"], row["jobs"]) == ("Running", 3, 75.0, {"done": 4})
    # Validated there too: 100 % and Done.
    catalogue.set_replica_state([done[0]], "IN2P3-DCACHE", ReplicaState.VALIDATED)
    (row,) = [r for r in campaigns_overview(folder, store, catalogue) if r["status"] != "Invalid"]
    assert (row["status"], row["processed"], row["processed_pct"], row["pending"]) == (
        "Done",
        4,
        100.0,
        {"CNAF-STORM": 0, "IN2P3-DCACHE": 0},
    )
    store.close()
    catalogue.close()


def test_processed_pct_is_rounded_down() -> None:
    from rawflow.processing.campaign_round import CampaignStatus

    def pct(processed: int, files: int) -> float:
        return CampaignStatus("c", "reprocessing", "dirac", "Running", files, processed).processed_pct

    assert (pct(1999, 2000), pct(2, 3), pct(2000, 2000), pct(0, 0)) == (99.9, 66.6, 100.0, 0.0)
