"""User analyses: `rawflow submit` validates and keeps the steering file, `rawflow analysis list|status` shows
it, the generic rawflow_analysis DAG parses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rawflow.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "campaigns" / "rerec-2026-11.yaml"


def analysis_file(tmp_path: Path, *, extra: str = "") -> Path:
    text = (
        EXAMPLE.read_text()
        .replace("kind: reprocessing", "kind: analysis\nuser: alice")
        .replace("rerec-2026-11", "vertex-study")
    )
    path = tmp_path / "analysis.yaml"
    path.write_text(text + extra)
    return path


def test_submit_keeps_the_file_and_needs_airflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "analyses"
    monkeypatch.setenv("RAWFLOW_ANALYSES_DIR", str(folder))
    monkeypatch.delenv("RAWFLOW_AIRFLOW_URL", raising=False)
    monkeypatch.setenv("RAWFLOW_VAR", str(tmp_path / "var"))
    path = analysis_file(tmp_path)
    assert cli(["submit", str(path)]) == 2
    assert "no Airflow API" in capsys.readouterr().err
    assert (folder / "alice.vertex-study.yaml").read_text() == path.read_text()
    # The same name with other content is refused in one line; a production campaign is not an analysis.
    changed = analysis_file(tmp_path, extra="priority: 7\n")
    assert cli(["submit", str(changed)]) == 2
    assert "name='vertex-study': already submitted with other content" in capsys.readouterr().err
    assert cli(["submit", str(EXAMPLE)]) == 2
    assert "kind='reprocessing': rawflow submit takes kind: analysis" in capsys.readouterr().err
    db = f"sqlite:///{tmp_path}/jobs.db"
    assert cli(["analysis", "list", "--user", "alice", "--jobs-db", db, "--catalogue", db, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["name"], row["kind"], row["status"]) == ("vertex-study", "analysis", "Waiting")
    assert cli(["analysis", "list", "--user", "bob", "--jobs-db", db, "--catalogue", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_analysis_dag_parses() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "rawflow_analysis.py"))
    assert bag.import_errors == {}
    dag = bag.dags["rawflow_analysis"]
    assert sorted(dag.task_ids) == ["blocks", "process"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # a run per submission, nothing scheduled
