"""The campaign DAG factory: one DAG per steering file; a bad file is a one-line parse warning that never
breaks the other campaigns."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "campaigns" / "rerec-2026-11.yaml"


def test_one_dag_per_file_and_a_bad_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    shutil.copy(EXAMPLE, tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text(
        EXAMPLE.read_text().replace("rerec-2026-11", "mc-two").replace("dirac", "htcondor")
    )
    (tmp_path / "broken.yaml").write_text(EXAMPLE.read_text().replace("backend: dirac", "backend: slurm"))
    (tmp_path / "notes.txt").write_text("not a campaign")
    monkeypatch.setenv("RAWFLOW_CAMPAIGNS_DIR", str(tmp_path))
    bag = DagBag(dag_folder=str(ROOT / "dags" / "rawflow_campaigns.py"))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["rawflow_campaign_mc-two", "rawflow_campaign_rerec-2026-11"]
    (warning,) = [w for ws in bag.captured_warnings.values() for w in ws]
    assert f"{tmp_path / 'broken.yaml'}: backend='slurm': expected one of dirac, htcondor" in warning
    dag = bag.dags["rawflow_campaign_rerec-2026-11"]
    assert sorted(dag.task_ids) == ["blocks", "process"]
    assert dag.get_task("process").compute_conn_id == "rawflow_compute_dirac"
    assert bag.dags["rawflow_campaign_mc-two"].get_task("process").compute_conn_id == "rawflow_compute"
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"


def test_a_file_naming_an_unknown_site_gets_no_dag_but_an_import_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DAG files check site names against the policy as `rawflow campaign check` does (issue 9)."""
    from airflow.dag_processing.dagbag import DagBag

    folder = tmp_path / "campaigns"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "a.yaml")
    (folder / "b.yaml").write_text(
        EXAMPLE.read_text().replace("rerec-2026-11", "elsewhere").replace("site: CNAF-STORM", "site: NOWHERE-SE")
    )
    monkeypatch.setenv("RAWFLOW_CAMPAIGNS_DIR", str(folder))
    monkeypatch.delenv("RAWFLOW_SITES", raising=False)
    monkeypatch.setenv("RAWFLOW_VAR", str(tmp_path / "no-grid"))
    line = f"{folder / 'b.yaml'}: input.site='NOWHERE-SE': unknown site (known: "
    bag = DagBag(dag_folder=str(ROOT / "dags" / "rawflow_campaigns.py"))
    assert bag.import_errors == {} and sorted(bag.dag_ids) == ["rawflow_campaign_rerec-2026-11"]
    (warning,) = [w for ws in bag.captured_warnings.values() for w in ws]
    assert line in warning
    errors = DagBag(dag_folder=str(ROOT / "dags" / "rawflow_campaign_errors.py"))
    assert errors.dag_ids == []
    (message,) = errors.import_errors.values()
    assert line in message
