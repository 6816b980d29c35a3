"""DIRAC compute backend: the real DIRAC client API (``Job``, ``Dirac``) behind the ComputeBackend interface.

DIRAC 9.1 cannot share a venv with Airflow, so every DIRAC call runs in ``.venv-dirac`` through
:mod:`rawflow.compute.dirac_runner` (JSON in, JSON out, each call bounded in time). Two modes:

- ``local`` (the embedded default; no DIRAC server): a batch is run by a detached runner with DIRAC's local
  execution (``Dirac().submitJob(job, mode="local")``), one parameter after the other on ``slots`` local slots.
- ``wms``: a batch is ONE parametric DIRAC job (``setParameterSequence``: the keys and the arguments) sent to
  the configured DIRAC server; DIRAC's job states are mapped with :func:`job_state`.

Jobs run the same ``rawflow-job`` wrapper as on HTCondor (xrootd stage-in/out, the payload's report), which
writes its result to ``rawflow-result.json`` (an output-sandbox file). Submission is idempotent by key: the
backend records key → DIRAC job in a small SQLite file under ``work_dir``; a batch is recorded as *pending*
before it is submitted, so a crash between DIRAC's answer and the record is healed by finding the batch's
jobs by JobGroup and JobName (= the key) instead of submitting them again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rawflow.compute.base import (
    JOB_KEY,
    ComputeBackendError,
    ComputeJobError,
    JobHandle,
    JobOutcome,
    JobSpec,
    JobState,
    JobStatus,
)

RUNNER = Path(__file__).with_name("dirac_runner.py")
WRAPPER = Path(__file__).with_name("job_wrapper.py")
TAIL_LIMIT = 4096

# DIRAC job states (JobStatus module) → JobState.
_DIRAC_STATES: dict[str, JobState] = {
    "Submitting": JobState.QUEUED,
    "Received": JobState.QUEUED,
    "Checking": JobState.QUEUED,
    "Staging": JobState.QUEUED,
    "Waiting": JobState.QUEUED,
    "Matched": JobState.QUEUED,
    "Rescheduled": JobState.QUEUED,
    "Running": JobState.RUNNING,
    "Completing": JobState.RUNNING,
    "Stalled": JobState.HELD,  # the pilot stopped reporting: needs a reschedule
    "Done": JobState.DONE,
    "Completed": JobState.RUNNING,  # payload ended, outputs being uploaded
    "Failed": JobState.FAILED,
    "Killed": JobState.REMOVED,
    "Deleted": JobState.REMOVED,
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS dirac_batches (
  name TEXT PRIMARY KEY, mode TEXT NOT NULL, state TEXT NOT NULL, runner_pid INTEGER, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dirac_jobs (
  key TEXT PRIMARY KEY, job_id TEXT NOT NULL, batch TEXT NOT NULL, state TEXT NOT NULL, exit_code INTEGER,
  pid INTEGER, result TEXT, updated REAL NOT NULL);
"""


def job_state(status: Mapping[str, Any]) -> JobState:
    """DIRAC's Status (pure) → JobState; an unknown status is FAILED (never silently running)."""
    return _DIRAC_STATES.get(str(status.get("Status", "")), JobState.FAILED)


def encode_argv(job: JobSpec) -> str:
    """The wrapper's ``--argv-b64`` value (pure): survives JDL, workflow and shell quoting unchanged. Unpadded:
    dirac-jobexec splits ``-p name=value`` at every '=' (a padded value makes it fail)."""
    if not JOB_KEY.fullmatch(job.payload):
        raise ComputeJobError(f"invalid payload name {job.payload!r}")
    raw = json.dumps([job.payload, *job.args], ensure_ascii=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def check_key(key: str) -> str:
    if not JOB_KEY.fullmatch(key):
        raise ComputeJobError(f"invalid job key {key!r}: expected {JOB_KEY.pattern}")
    return key


def outcome_from_result(key: str, job_id: str | None, state: JobState, values: Mapping[str, Any]) -> JobOutcome:
    """A terminal job's outcome from the wrapper's result file (pure)."""
    try:
        report = json.loads(str(values.get("RawflowReport") or "{}"))
    except ValueError:
        report = {}
    exit_code = report.get("exit_code") if isinstance(report, dict) else None
    if state is JobState.FAILED and exit_code is None:
        exit_code = 80
    return JobOutcome(
        key=key,
        backend_id=job_id,
        state=state,
        exit_code=int(exit_code) if exit_code is not None and state is not JobState.REMOVED else None,
        stdout_tail=str(values.get("RawflowStdout") or "")[-TAIL_LIMIT:],
        stderr_tail=str(values.get("RawflowStderr") or "")[-TAIL_LIMIT:],
        report=report if isinstance(report, dict) else {},
    )


def _software_digest(dirac_python: str, payloads: Path) -> str:
    """What the deployed software area is made of: the wrapper, its interpreter and every payload file."""
    digest = hashlib.sha256(dirac_python.encode() + b"\0" + WRAPPER.read_bytes())
    for path in sorted(p for p in payloads.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(payloads)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


class DiracBackend:
    """ComputeBackend on DIRAC.

    ``dirac_python``: the DIRAC venv's interpreter. ``work_dir``: the key records, local job dirs and fetched
    sandboxes. ``payload_python``: the interpreter payloads run with (numpy, uproot). ``sw_dir``: a software
    ``payloads``: the directory deployed as ``rawflow.payloads`` in the jobs' software area (default: Rawflow's). ``client``: a file
    whose ``Dirac`` class stands in for DIRAC's (tests only). ``site`` and ``priority`` go to every job.
    """

    name = "dirac"

    def __init__(
        self,
        *,
        work_dir: str,
        mode: str = "local",
        dirac_python: str | None = None,
        payload_python: str | None = None,
        payloads: str | None = None,
        slots: int = 2,
        site: str | None = None,
        priority: int | None = None,
        client: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        if mode not in ("local", "wms"):
            raise ComputeJobError(f"unknown DIRAC mode {mode!r}: expected local or wms")
        self.mode = mode
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parents[3]
        self.dirac_python = (
            dirac_python or os.environ.get("RAWFLOW_DIRAC_PYTHON") or str(root / ".venv-dirac/bin/python")
        )
        self.payload_python = payload_python or sys.executable
        self.sw_dir = self._deploy_software(
            Path(payloads) if payloads else Path(__file__).resolve().parents[1] / "payloads"
        )
        self.slots = slots
        self.site = site
        self.priority = priority
        self.client = client
        self.timeout = timeout
        # Not bound to this thread: the triggerer builds the backend in one thread (sync_to_async) and polls it
        # from others (asyncio.to_thread), one call at a time.
        self._conn = sqlite3.connect(
            self.work_dir / "dirac.sqlite", timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.executescript(SCHEMA)

    # --- plumbing -----------------------------------------------------------------------------------------
    def _deploy_software(self, payloads: Path) -> Path:
        """The software area jobs see (like the pool's /opt/rawflow/sw): the wrapper and the payloads, replaced
        as a whole so a new Rawflow version is what the next job runs."""
        sw = self.work_dir / "sw"
        digest = _software_digest(self.dirac_python, payloads)
        if (sw / ".digest").is_file() and (sw / ".digest").read_text() == digest:
            return sw  # the same software already deployed: jobs running from it are left alone
        fresh = self.work_dir / f"sw.new.{os.getpid()}"
        shutil.rmtree(fresh, ignore_errors=True)
        (fresh / "bin").mkdir(parents=True)
        # Local execution copies the executable into the job dir and execs it: it needs its interpreter line.
        wrapper = fresh / "bin" / "rawflow_job.py"
        wrapper.write_text(f"#!{self.dirac_python}\n{WRAPPER.read_text()}")
        wrapper.chmod(0o755)
        (fresh / "rawflow").mkdir()
        (fresh / "rawflow" / "__init__.py").write_text('"""Rawflow code deployed for DIRAC jobs (payloads only)."""\n')
        shutil.copytree(payloads, fresh / "rawflow" / "payloads", ignore=shutil.ignore_patterns("__pycache__"))
        (fresh / ".digest").write_text(digest)
        if sw.exists():
            old = self.work_dir / f"sw.old.{os.getpid()}"
            sw.rename(old)
            fresh.rename(sw)
            shutil.rmtree(old, ignore_errors=True)
        else:
            fresh.rename(sw)
        return sw

    def _request(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "wrapper": str(self.sw_dir / "bin" / "rawflow_job.py"),
            "env": {"RAWFLOW_PAYLOAD_PYTHON": self.payload_python, "RAWFLOW_SW": str(self.sw_dir)},
            "site": self.site,
            "priority": self.priority,
            "client": self.client,
            **extra,
        }

    def _run(self, command: str, request: Mapping[str, Any]) -> dict[str, Any]:
        env = {**os.environ, "PATH": f"{Path(self.dirac_python).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        try:
            proc = subprocess.run(
                [self.dirac_python, str(RUNNER), command],
                input=json.dumps(request),
                capture_output=True,
                text=True,
                timeout=self.timeout,
                cwd=self.work_dir,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise ComputeBackendError(f"DIRAC {command}: no answer within {self.timeout:.0f} s") from None
        except OSError as exc:
            raise ComputeBackendError(f"DIRAC {command}: cannot run {self.dirac_python!r}: {exc}") from exc
        try:
            answer: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            raise ComputeBackendError(f"DIRAC {command}: exit {proc.returncode}: {tail[0]!r}") from None
        if "error" in answer:
            raise ComputeBackendError(f"DIRAC {command}: {answer['error']}")
        return answer

    def _rows(self, keys: Sequence[str]) -> dict[str, sqlite3.Row]:
        self._conn.row_factory = sqlite3.Row
        wanted = [check_key(k) for k in keys]
        rows: dict[str, sqlite3.Row] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(f"SELECT * FROM dirac_jobs WHERE key IN ({marks})", chunk):
                rows[row["key"]] = row
        return rows

    def _heal_pending(self) -> None:
        """WMS batches submitted but not recorded (a crash in between): find their jobs by group and name."""
        for (batch,) in self._conn.execute("SELECT name FROM dirac_batches WHERE state='pending'").fetchall():
            names = self._run("wms-find", self._request({"batch": batch}))["names"]
            now = time.time()
            for job_id, key in names.items():
                if isinstance(key, str) and JOB_KEY.fullmatch(key):
                    self._conn.execute(
                        "INSERT OR REPLACE INTO dirac_jobs (key, job_id, batch, state, updated) VALUES (?,?,?,?,?)",
                        (key, job_id, batch, "queued", now),
                    )
            self._conn.execute("UPDATE dirac_batches SET state='submitted' WHERE name=?", (batch,))

    def _wms_states(self, rows: Mapping[str, sqlite3.Row]) -> dict[str, Mapping[str, Any]]:
        ids = [row["job_id"] for row in rows.values()]
        return dict(self._run("wms-status", self._request({"ids": ids}))["status"]) if ids else {}

    def _state(self, row: sqlite3.Row, wms: Mapping[str, Mapping[str, Any]]) -> JobState:
        if self.mode == "wms":
            status = wms.get(str(row["job_id"]))
            return job_state(status) if status is not None else JobState.MISSING
        state = JobState(row["state"])
        if not state.terminal and state is not JobState.REMOVED:
            runner = self._conn.execute("SELECT runner_pid FROM dirac_batches WHERE name=?", (row["batch"],)).fetchone()
            if not _alive(runner[0] if runner else None):
                return JobState.MISSING  # the runner vanished (host restart, kill): the key is free again
        return state

    # --- ComputeBackend -----------------------------------------------------------------------------------
    def submit(self, jobs: Sequence[JobSpec], *, batch: str) -> list[JobHandle]:
        if not JOB_KEY.fullmatch(batch):
            raise ComputeJobError(f"invalid batch name {batch!r}: expected {JOB_KEY.pattern}")
        if len({job.key for job in jobs}) != len(jobs):
            raise ComputeJobError(f"batch {batch!r} holds the same key twice")
        argvs = [encode_argv(job) for job in jobs]
        if self.mode == "wms":
            self._heal_pending()
        rows = self._rows([job.key for job in jobs])
        wms = self._wms_states(rows) if self.mode == "wms" else {}
        handles: dict[str, JobHandle] = {}
        for key, row in rows.items():
            if self._state(row, wms) not in (JobState.REMOVED, JobState.MISSING):
                handles[key] = JobHandle(key=key, backend_id=str(row["job_id"]), batch=row["batch"], new=False)
        todo = [(job, argv) for job, argv in zip(jobs, argvs, strict=True) if job.key not in handles]
        if todo:
            unit = (
                batch
                if not self._conn.execute("SELECT 1 FROM dirac_batches WHERE name=?", (batch,)).fetchone()
                else f"{batch}.{time.time_ns()}"
            )
            payload_rows = [{"key": job.key, "argv": argv} for job, argv in todo]
            self._conn.execute(
                "INSERT INTO dirac_batches (name, mode, state, created) VALUES (?,?,?,?)",
                (unit, self.mode, "pending", time.time()),
            )
            if self.mode == "wms":
                ids = self._run("wms-submit", self._request({"batch": unit, "jobs": payload_rows}))["ids"]
                if len(ids) != len(todo):
                    raise ComputeBackendError(f"DIRAC returned {len(ids)} job ids for {len(todo)} parameters")
                job_ids = [str(i) for i in ids]
            else:
                job_ids = [f"{unit}:{i}" for i in range(len(todo))]
            now = time.time()
            # One transaction (the connection autocommits otherwise: one fsync per row).
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO dirac_jobs (key, job_id, batch, state, exit_code, pid, result, updated)"
                    " VALUES (?,?,?,?,NULL,NULL,NULL,?)",
                    [(job.key, job_id, unit, "queued", now) for (job, _), job_id in zip(todo, job_ids, strict=True)],
                )
                self._conn.execute("UPDATE dirac_batches SET state='submitted' WHERE name=?", (unit,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            if self.mode == "local":
                self._start_local(unit, payload_rows)
            for (job, _), job_id in zip(todo, job_ids, strict=True):
                handles[job.key] = JobHandle(key=job.key, backend_id=job_id, batch=unit, new=True)
        return [handles[job.key] for job in jobs]

    def _start_local(self, unit: str, payload_rows: list[dict[str, str]]) -> None:
        request = self._request(
            {
                "batch": unit,
                "jobs": payload_rows,
                "db": str(self.work_dir / "dirac.sqlite"),
                "jobs_dir": str(self.work_dir / "jobs"),
                "slots": self.slots,
            }
        )
        env = {**os.environ, "PATH": f"{Path(self.dirac_python).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        log = open(self.work_dir / f"runner-{unit}.log", "wb")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [self.dirac_python, str(RUNNER), "local-batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=self.work_dir,
            env=env,
            start_new_session=True,  # outlives this process, as a WMS job outlives its submitter
        )
        log.close()
        self._conn.execute("UPDATE dirac_batches SET runner_pid=? WHERE name=?", (proc.pid, unit))
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(request).encode())
        proc.stdin.close()

    def poll(self, keys: Sequence[str]) -> dict[str, JobStatus]:
        rows = self._rows(keys)
        wms = self._wms_states(rows) if self.mode == "wms" else {}
        out: dict[str, JobStatus] = {}
        for key in keys:
            row = rows.get(key)
            if row is None:
                out[key] = JobStatus(key=key, backend_id=None, state=JobState.MISSING)
                continue
            state = self._state(row, wms)
            exit_code = row["exit_code"] if self.mode == "local" and state in (JobState.DONE, JobState.FAILED) else None
            if self.mode == "wms" and state in (JobState.DONE, JobState.FAILED):
                exit_code = 0 if state is JobState.DONE else self._wms_exit_code(row)
            hold = (
                str(wms.get(str(row["job_id"]), {}).get("MinorStatus") or "stalled") if state is JobState.HELD else None
            )
            out[key] = JobStatus(
                key=key, backend_id=str(row["job_id"]), state=state, hold_reason=hold, exit_code=exit_code
            )
        return out

    def _wms_exit_code(self, row: sqlite3.Row) -> int | None:
        values = self._wms_result(row)
        return outcome_from_result(row["key"], row["job_id"], JobState.FAILED, values).exit_code

    def _wms_result(self, row: sqlite3.Row) -> Mapping[str, Any]:
        """The job's result file, fetched once from its output sandbox and cached in the record."""
        if row["result"]:
            return dict(json.loads(row["result"]))
        results = self._run(
            "wms-outputs", self._request({"ids": [row["job_id"]], "dir": str(self.work_dir / "sandboxes")})
        )["results"]
        values = results.get(str(row["job_id"]), {})
        self._conn.execute("UPDATE dirac_jobs SET result=? WHERE key=?", (json.dumps(values), row["key"]))
        return dict(values)

    def collect(self, keys: Sequence[str]) -> dict[str, JobOutcome]:
        statuses = self.poll(keys)
        rows = self._rows(keys)
        outcomes: dict[str, JobOutcome] = {}
        for key, status in statuses.items():
            if not status.state.terminal:
                continue
            row = rows.get(key)
            if row is None or status.state is JobState.MISSING:
                outcomes[key] = JobOutcome(key=key, backend_id=status.backend_id, state=status.state)
                continue
            values: Mapping[str, Any] = {}
            if status.state in (JobState.DONE, JobState.FAILED):
                values = self._wms_result(row) if self.mode == "wms" else json.loads(row["result"] or "{}")
            outcome = outcome_from_result(key, str(row["job_id"]), status.state, values)
            if status.state is JobState.REMOVED:
                outcome = JobOutcome(
                    key=key, backend_id=str(row["job_id"]), state=JobState.REMOVED, hold_reason="killed"
                )
            outcomes[key] = outcome
        return outcomes

    def release(self, keys: Sequence[str]) -> None:
        # DIRAC has no hold: a Stalled job is rescheduled by the WMS itself; a local job never holds.
        for key in keys:
            check_key(key)

    def cancel(self, keys: Sequence[str]) -> None:
        rows = self._rows(keys)
        if self.mode == "wms":
            wms = self._wms_states(rows)
            live = [r["job_id"] for r in rows.values() if not job_state(wms.get(str(r["job_id"]), {})).terminal]
            if live:
                self._run("wms-kill", self._request({"ids": live}))
            return
        for key in rows:
            # Claim it first: a queued job is then never started, a running one is killed by process group.
            self._conn.execute(
                "UPDATE dirac_jobs SET state='removed', updated=? WHERE key=? AND state IN ('queued','running')",
                (time.time(), key),
            )
            pid = self._conn.execute("SELECT pid FROM dirac_jobs WHERE key=?", (key,)).fetchone()[0]
            if pid and _alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        self._conn.close()


__all__ = ["DiracBackend", "check_key", "encode_argv", "job_state", "outcome_from_result"]
