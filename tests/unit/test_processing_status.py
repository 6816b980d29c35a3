"""The Processing page's numbers, its escaping of job output, the jobs metrics and `rawflow jobs`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rawflow.catalogue.base import FileRecord
from rawflow.catalogue.sql import SqlCatalogue
from rawflow.cli import main as cli
from rawflow.monitoring import MonitoringStore
from rawflow.naming import DataType, derived_lfn
from rawflow.processing.jobs import JobRecord, JobStore
from rawflow.processing.planning import DQM, RAW2RTRAW, JobPhase, plan_conversions, plan_dqm
from rawflow.processing.status import format_status, processing_status
from tests.fixtures.view import SqliteSources, view_client

TODAY = datetime.now(UTC)
DAY = f"{TODAY:%Y%m%d}"
HOSTILE = "<script>alert('x')</script> bad header"


def _raw(seq: int) -> FileRecord:
    lfn = f"/juno/raw/{TODAY:%Y}/{TODAY:%m%d}/JUNO.000077.Physics.Global.t.{DAY}010203.{seq:05d}.dat"
    return FileRecord(lfn, 100, f"{seq:08x}", DataType.RAW, DAY, 77, "Global", TODAY)


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/c.db"
    catalogue = SqlCatalogue(url)
    raws = [_raw(i) for i in range(1, 5)]
    catalogue.register_files(raws, site="IHEP-EOS")
    rtraw = raws[0].lfn.replace("/raw/", "/rtraw/").replace(".dat", ".rtraw")
    assert rtraw == derived_lfn(raws[0].lfn, DataType.RTRAW)
    child = FileRecord(rtraw, 200, "0000abcd", DataType.RTRAW, DAY, 77, "Global", TODAY)
    catalogue.register_files([child], site="IHEP-EOS", parents={rtraw: [raws[0].lfn]})
    catalogue.close()
    store = JobStore(url)
    jobs = plan_conversions(RAW2RTRAW, [(r.lfn, 77) for r in raws], block_id=DAY)
    records = [JobRecord.planned(j, "htcondor").evolve(attempts=1) for j in jobs]
    records[0] = records[0].evolve(state=JobPhase.DONE, backend_id="12.0", events=50)
    records[1] = records[1].evolve(state=JobPhase.PROBLEMATIC, exit_code=3, reason=HOSTILE, failures=3)
    records[2] = records[2].evolve(state=JobPhase.RUNNING, backend_id="12.2")
    dqm = plan_dqm({77: [rtraw]}, block_id=DAY)[0]
    spectrum = {"unit": "p.e.", "edges": [0, 5, 10], "counts": [3, 4], "overflow": 0}
    records.append(
        JobRecord.planned(dqm, "htcondor").evolve(
            state=JobPhase.DONE, summary={"events": 7, "charge_spectrum": spectrum}
        )
    )
    store.upsert(records)
    store.close()
    return url


def test_status_per_block_and_run(db: str) -> None:
    store = MonitoringStore(db)
    status = processing_status(store.engine, days=2)
    [run] = status.runs
    assert (run.block_id, run.run, run.raw, run.rtraw, run.esd) == (DAY, 77, 4, 1, 0)
    assert run.converted_pct == 25.0
    assert run.jobs[RAW2RTRAW] == {"done": 1, "problematic": 1, "running": 1, "submitting": 1}
    assert run.dqm is not None and run.dqm["charge_spectrum"]["counts"] == [3, 4]
    assert [f["reason"] for f in status.failures] == [HOSTILE]
    assert json.loads(json.dumps(status.to_dict()))["runs"][0]["jobs"][DQM] == {"done": 1}
    assert "run 77: RAW 4, RTRAW 1 (25.0%)" in format_status(status)


def test_processing_page_escapes_job_output_and_reloads_itself(db: str) -> None:
    with view_client(SqliteSources(db)) as client:
        html = client.get("/processing", params={"days": 2}).text
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; bad header" in html
        assert "job-problematic" in html and "25.0%" in html
        assert "refreshes every 60 s" in html and "location.reload(); }, 60000)" in html
        assert "location.reload(); }, 15000)" in client.get("/processing", params={"refresh": 15}).text


def test_jobs_metrics(db: str) -> None:
    from rawflow_airflow.metrics import keepup_job_metrics

    [family] = list(keepup_job_metrics(MonitoringStore(db)))
    values = {(s.labels["payload"], s.labels["state"]): s.value for s in family.samples}
    assert values[RAW2RTRAW, "problematic"] == 1 and values[RAW2RTRAW, "done"] == 1
    assert values["rec", "done"] == 0  # every series present


def test_jobs_cli_list_show_retry(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["jobs", "list", "--catalogue", db, "--state", "problematic", "--json"]) == 0
    [failed] = json.loads(capsys.readouterr().out)
    assert failed["exit_code"] == 3 and failed["reason"] == HOSTILE
    assert cli(["jobs", "show", failed["key"], "--catalogue", db]) == 0
    assert "problematic" in capsys.readouterr().out
    assert cli(["jobs", "retry", failed["key"], "--catalogue", db]) == 0
    assert JobStore(db).get([failed["key"]])[failed["key"]].state is JobPhase.RETRY_WAIT
    assert cli(["jobs", "show", "no-such-key", "--catalogue", db]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one-line error
    assert cli(["jobs", "list", "--catalogue", db]) == 0
