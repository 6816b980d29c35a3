"""Bad steering files in Airflow's import errors, through the DAG processor's own discovery and parsing: the
real dags folder listed as the DAG processor lists a bundle (safe-mode heuristic on), each file parsed by the
function its parsing subprocess runs (``_parse_file``: DagBag import, serialization, import errors keyed by the
file's path in the bundle — what it sends to the manager for the ``import_error`` table behind
``/api/v2/importErrors``), in a fresh Python process configured as the grid's Airflow is (dags and plugins
folders). With one good and one bad steering file: the good campaign's DAG is made, the factory file has no
error, and ``rawflow_campaign_errors.py``'s import error holds the bad file's exact line. With only good
files: no import error at all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
EXAMPLE = ROOT / "config" / "campaigns" / "rerec-2026-11.yaml"
OTHER_DAGS = {
    "rawflow_alerts",
    "rawflow_analysis",
    "rawflow_block_esd",
    "rawflow_block_raw",
    "rawflow_block_rtraw",
    "rawflow_keepup",
    "rawflow_receiver",
    "rawflow_reconcile",
}
# Run in the child: list the bundle as the DAG processor's manager does, parse each file as its parsing
# subprocess does, print {"files": [...], "dags": {dag_id: file}, "errors": {relative file: text}}.
PARSE = """
import json, sys
from pathlib import Path
import structlog
from airflow.dag_processing.processor import DagFileParseRequest, _parse_file
from airflow.utils.file import list_py_file_paths

dags = Path(sys.argv[1])
files = list_py_file_paths(dags, safe_mode=True)
made, errors = {}, {}
for file in files:
    result = _parse_file(DagFileParseRequest(file=file, bundle_path=dags, bundle_name="dags-folder"),
                         structlog.get_logger())
    made.update({dag.dag_id: Path(file).name for dag in result.serialized_dags})
    errors.update(result.import_errors or {})
print("RESULT " + json.dumps({"files": [Path(f).name for f in files], "dags": made, "errors": errors}))
"""


def parse_dags_folder(campaigns: Path, home: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(DAG id → the file that made it, file → its import error) over the files the processor would parse."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "RAWFLOW_CAMPAIGNS_DIR": str(campaigns),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins"), str(ROOT)]),
    }
    done = subprocess.run(
        [sys.executable, "-c", PARSE, str(DAGS)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert "rawflow_campaign_errors.py" in result["files"]  # not skipped by the safe-mode heuristic
    return result["dags"], result["errors"]


@pytest.fixture
def campaigns(tmp_path: Path) -> Path:
    folder = tmp_path / "campaigns"
    folder.mkdir()
    (tmp_path / "airflow").mkdir()
    return folder


def test_a_bad_steering_file_is_one_line_in_the_import_errors_and_the_good_one_loads(campaigns: Path) -> None:
    shutil.copy(EXAMPLE, campaigns / "good.yaml")
    bad = campaigns / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("rerec-2026-11", "other").replace("backend: dirac", "backend: slurm"))

    made, errors = parse_dags_folder(campaigns, campaigns.parent / "airflow")

    assert made["rawflow_campaign_rerec-2026-11"] == "rawflow_campaigns.py"
    assert set(made) == OTHER_DAGS | {"rawflow_campaign_rerec-2026-11"}
    assert list(errors) == ["rawflow_campaign_errors.py"]  # keyed as the import_error table's filename
    text = errors["rawflow_campaign_errors.py"]
    line = f"{bad}: backend='slurm': expected one of dirac, htcondor"
    assert line in text.splitlines(), text
    assert f"1 campaign steering file in {campaigns} does not validate: no DAG for it" in text
    assert str(campaigns / "good.yaml") not in text


def test_with_only_good_steering_files_there_is_no_import_error(campaigns: Path) -> None:
    shutil.copy(EXAMPLE, campaigns / "good.yaml")
    (campaigns / "second.yaml").write_text(EXAMPLE.read_text().replace("rerec-2026-11", "second"))

    made, errors = parse_dags_folder(campaigns, campaigns.parent / "airflow")

    assert errors == {}
    assert set(made) == OTHER_DAGS | {"rawflow_campaign_rerec-2026-11", "rawflow_campaign_second"}
    assert "rawflow_campaign_errors.py" not in made.values()
