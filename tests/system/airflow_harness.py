"""Run DAGs for real in system tests: a private AIRFLOW_HOME + SQLite DB, ``airflow dags test`` in a subprocess.

Connections and variables go in through ``AIRFLOW_CONN_*`` / ``AIRFLOW_VAR_*`` environment variables, exactly
as a deployment's secrets backend would hand them over; nothing is written into the repository.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rawflow.grid.airflow import AirflowPorts, airflow_bin, airflow_env, migrate_db

REPO = Path(__file__).resolve().parents[2]


class AirflowUnderTest:
    def __init__(self, home: Path, connections: Mapping[str, Mapping[str, Any]], variables: Mapping[str, str]) -> None:
        self.home = home
        self.db = home / "airflow.db"
        env = airflow_env(home=home, repo=REPO, ports=AirflowPorts.pick(), database_url=f"sqlite:///{self.db}")
        env.update({f"AIRFLOW_CONN_{cid.upper()}": json.dumps(dict(conn)) for cid, conn in connections.items()})
        env.update({f"AIRFLOW_VAR_{name.upper()}": value for name, value in variables.items()})
        env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
        self.env = env
        migrate_db(env, home / "migrate.log")

    def dags_test(
        self, dag_id: str, logical_date: str | None = None, *, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        argv = [airflow_bin(), "dags", "test", dag_id] + ([logical_date] if logical_date else [])
        result = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.home)
        (self.home / f"dags-test-{dag_id}.log").write_text(result.stdout + result.stderr)
        return result

    def task_states(self, dag_id: str) -> dict[str, list[str]]:
        """Every task instance's final state, by task id (mapped instances listed in map index order)."""
        with sqlite3.connect(self.db) as db:
            rows = db.execute(
                "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? ORDER BY task_id, map_index",
                (dag_id,),
            ).fetchall()
        states: dict[str, list[str]] = {}
        for task_id, _map_index, state in rows:
            states.setdefault(task_id, []).append(state)
        return states

    def run_states(self, dag_id: str) -> list[str]:
        with sqlite3.connect(self.db) as db:
            return [r[0] for r in db.execute("SELECT state FROM dag_run WHERE dag_id = ? ORDER BY id", (dag_id,))]

    def xcom(self, dag_id: str, task_id: str) -> list[Any]:
        with sqlite3.connect(self.db) as db:
            rows = db.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' ORDER BY map_index",
                (dag_id, task_id),
            ).fetchall()
        return [json.loads(r[0]) for r in rows]
