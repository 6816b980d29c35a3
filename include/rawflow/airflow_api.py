"""A small client for Airflow's public REST API (v2), used by the ops CLI, the demo and system tests.

It talks HTTP only: operations go through Airflow (runs, backfills, variables), never around it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rawflow.errors import PermanentError, TransientError


class AirflowAPI:
    def __init__(self, url: str, username: str, password: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self._password = password
        self.timeout = timeout
        self._token: str | None = None

    def __repr__(self) -> str:
        return f"AirflowAPI({self.url!r}, user={self.username!r})"

    def _login(self) -> str:
        body = json.dumps({"username": self.username, "password": self._password}).encode()
        req = urllib.request.Request(
            f"{self.url}/auth/token", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return str(json.load(resp)["access_token"])

    def request(self, method: str, path: str, body: object = None, **query: object) -> Any:
        """One API call; a 5xx or connection failure is retried (the embedded SQLite database is briefly
        locked now and then under load), a 4xx raises PermanentError at once."""
        attempts, attempt = 4, 1
        while True:
            try:
                return self._request_once(method, path, body, **query)
            except TransientError:
                if attempt >= attempts:
                    raise
                time.sleep(0.5 * 2**attempt)
                attempt += 1

    def _request_once(self, method: str, path: str, body: object = None, **query: object) -> Any:
        if self._token is None:
            self._token = self._login()
        qs = ("?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})) if query else ""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/api/v2{path}{qs}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self._token}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            error = TransientError if exc.code >= 500 or exc.code == 429 else PermanentError
            raise error(f"Airflow API {method} {path}: HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise TransientError(f"Airflow API {self.url} not reachable: {exc.reason}") from None
        return json.loads(raw) if raw else None

    # -- the few calls Rawflow needs --------------------------------------------------------------------

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def pause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", {"is_paused": True})

    def trigger(self, dag_id: str, *, logical_date: str | None, conf: dict[str, Any] | None = None) -> str:
        run = self.request("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": logical_date, "conf": conf or {}})
        return str(run["dag_run_id"])

    def backfill(self, dag_id: str, from_date: str, to_date: str, *, reprocess: str = "none") -> dict[str, Any]:
        body = {
            "dag_id": dag_id,
            "from_date": from_date,
            "to_date": to_date,
            "reprocess_behavior": reprocess,
            "max_active_runs": 10,
        }
        result: dict[str, Any] = self.request("POST", "/backfills", body)
        return result

    def wait_backfill(self, backfill_id: int | str, *, timeout: float, poll: float = 2.0) -> dict[str, Any]:
        """Wait until the scheduler marks the backfill completed (some time after its last run ends)."""
        deadline = time.monotonic() + timeout
        while True:
            backfill: dict[str, Any] = self.request("GET", f"/backfills/{backfill_id}")
            if backfill.get("completed_at"):
                return backfill
            if time.monotonic() > deadline:
                raise TransientError(f"backfill {backfill_id} not completed after {timeout:.0f} s")
            time.sleep(poll)

    def runs(self, dag_id: str, **query: object) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.request("GET", f"/dags/{dag_id}/dagRuns", limit=100, **query)["dag_runs"]
        return runs

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        tis: list[dict[str, Any]] = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)[
            "task_instances"
        ]
        return tis

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        entry = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
            map_index=map_index,
            deserialize="true",
        )
        return entry["value"]

    def set_variable(self, key: str, value: str) -> None:
        try:
            self.request("GET", f"/variables/{key}")
        except PermanentError:  # 404: not set yet
            self.request("POST", "/variables", {"key": key, "value": value})
        else:
            self.request("PATCH", f"/variables/{key}", {"key": key, "value": value})

    def wait_runs(self, dag_id: str, run_ids: list[str], *, timeout: float, poll: float = 2.0) -> dict[str, str]:
        """Wait until every run is finished; returns run id → final state."""
        deadline = time.monotonic() + timeout
        while True:
            states = {r["dag_run_id"]: r["state"] for r in self.runs(dag_id) if r["dag_run_id"] in run_ids}
            if len(states) == len(run_ids) and all(s in ("success", "failed") for s in states.values()):
                return states
            if time.monotonic() > deadline:
                raise TransientError(f"{dag_id} runs not finished after {timeout:.0f} s: {states}")
            time.sleep(poll)
