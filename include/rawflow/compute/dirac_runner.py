"""The DIRAC side of the DIRAC compute backend: run with the DIRAC venv's Python (``.venv-dirac``), never imported
by Rawflow's own processes (DIRAC's pins clash with Airflow's — the ExternalPythonOperator pattern).

    .venv-dirac/bin/python dirac_runner.py COMMAND      (JSON request on stdin, JSON answer on stdout)

Commands (standard library + the DIRAC client API ``Job``/``Dirac`` only; no rawflow import):

- ``wms-submit``  one parametric job for the batch (``setParameterSequence`` over the keys and the wrapper's
  ``--argv-b64`` arguments, ``JobName`` = the key, ``JobGroup`` = the batch) with ``Dirac().submitJob(job)``
  → ``{"ids": [...]}`` in parameter order.
- ``wms-status``  ``Dirac().getJobStatus(ids)`` → per id Status/MinorStatus/ApplicationStatus.
- ``wms-find``    ``Dirac().selectJobs(jobGroup=batch)`` + ``getJobAttributes`` → per id its JobName (the key):
  how a submission that crashed before its ids were recorded is found again.
- ``wms-outputs`` ``Dirac().getOutputSandbox(id, outputDir)`` → per id the wrapper's ``rawflow-result.json``.
- ``wms-kill``    ``Dirac().killJob(ids)``.
- ``local-batch`` (detached) runs a batch's jobs with DIRAC's local execution (``submitJob(job, mode="local")``),
  one parameter after the other on ``slots`` local slots, recording states in the backend's SQLite file.
- ``local-job``   one parameter of a batch: ``Dirac().submitJob(job, mode="local")`` in its own job dir.

``client`` in a request names a Python file whose ``Dirac`` class replaces DIRAC's (the labelled WMS test
double of rawflow.testing.dirac_double); the ``Job`` class is always DIRAC's own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

RESULT_FILE = "rawflow-result.json"


def _dirac_classes(client: str | None) -> tuple[Any, Any]:
    from DIRAC.Interfaces.API.Job import Job

    if client:
        spec = importlib.util.spec_from_file_location("rawflow_dirac_client", client)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return Job, module.Dirac
    from DIRAC.Interfaces.API.Dirac import Dirac

    return Job, Dirac


def _checked(result: Any, what: str) -> Any:
    if not isinstance(result, dict) or not result.get("OK"):
        message = result.get("Message") if isinstance(result, dict) else result
        raise RuntimeError(f"{what}: {message}")
    return result.get("Value")


def build_job(job_class: Any, request: dict[str, Any], rows: list[dict[str, str]]) -> Any:
    """The DIRAC job of ``rows`` (each {key, argv}): parametric when given several rows or in WMS mode."""
    job = job_class()
    job.setJobGroup(request["batch"])
    if request.get("site"):
        job.setDestination(request["site"])
    if request.get("priority") is not None:
        job.setPriority(int(request["priority"]))
    job.setExecutionEnv(request.get("env") or {})
    job.setOutputSandbox([RESULT_FILE, "std.out", "std.err"])
    if len(rows) == 1 and not request.get("parametric"):
        job.setName(rows[0]["key"])
        job.setExecutable(request["wrapper"], arguments=f"--argv-b64 {rows[0]['argv']}")
    else:
        job.setParameterSequence("key", [r["key"] for r in rows])
        job.setParameterSequence("argv", [r["argv"] for r in rows])
        job.setName("%(key)s")
        job.setExecutable(request["wrapper"], arguments="--argv-b64 %(argv)s")
    return job


# --- WMS mode ---------------------------------------------------------------------------------------------
def wms_submit(request: dict[str, Any]) -> dict[str, Any]:
    job_class, dirac_class = _dirac_classes(request.get("client"))
    job = build_job(job_class, {**request, "parametric": True}, request["jobs"])
    ids = _checked(dirac_class().submitJob(job), "submitJob")
    ids = ids if isinstance(ids, list) else [ids]
    return {"ids": [int(i) for i in ids]}


def wms_status(request: dict[str, Any]) -> dict[str, Any]:
    _, dirac_class = _dirac_classes(request.get("client"))
    if not request["ids"]:
        return {"status": {}}
    value = _checked(dirac_class().getJobStatus([int(i) for i in request["ids"]]), "getJobStatus")
    return {"status": {str(k): v for k, v in value.items()}}


def wms_find(request: dict[str, Any]) -> dict[str, Any]:
    _, dirac_class = _dirac_classes(request.get("client"))
    dirac = dirac_class()
    ids = _checked(dirac.selectJobs(jobGroup=request["batch"], printErrors=False), "selectJobs") or []
    names = {}
    for job_id in ids:
        attributes = _checked(dirac.getJobAttributes(int(job_id)), "getJobAttributes")
        names[str(job_id)] = attributes.get("JobName")
    return {"names": names}


def wms_outputs(request: dict[str, Any]) -> dict[str, Any]:
    _, dirac_class = _dirac_classes(request.get("client"))
    dirac = dirac_class()
    results: dict[str, Any] = {}
    for job_id in request["ids"]:
        out_dir = Path(request["dir"]) / str(job_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        got = dirac.getOutputSandbox(int(job_id), outputDir=str(out_dir), noJobDir=True)
        path = out_dir / RESULT_FILE
        if got.get("OK") and path.is_file():
            results[str(job_id)] = json.loads(path.read_text())
        else:
            results[str(job_id)] = {"RawflowStderr": f"no output sandbox: {got.get('Message', 'no result file')}"}
    return {"results": results}


def wms_kill(request: dict[str, Any]) -> dict[str, Any]:
    _, dirac_class = _dirac_classes(request.get("client"))
    if request["ids"]:
        result = dirac_class().killJob([int(i) for i in request["ids"]])
        if not result.get("OK"):
            return {"error": str(result.get("Message"))}
    return {}


# --- local mode -------------------------------------------------------------------------------------------
def _db(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def local_job(request: dict[str, Any]) -> dict[str, Any]:
    """One parameter of a batch, run by DIRAC's local execution in ``request['dir']``."""
    job_class, dirac_class = _dirac_classes(None)
    row = request["row"]
    # No configuration service in local mode: a destination site cannot be checked (nor matters) here.
    job = build_job(job_class, {**request, "site": None}, [row])
    os.chdir(request["dir"])
    # The environment of the local run is this process's: setExecutionEnv applies to WMS jobs only.
    os.environ.update(request.get("env") or {})
    result = dirac_class().submitJob(job, mode="local")
    found = sorted(Path(request["dir"]).glob(f"Local_*_JobDir/{RESULT_FILE}"))
    values = json.loads(found[-1].read_text()) if found else {}
    if not found:
        values["RawflowStderr"] = f"DIRAC local execution left no result: {result.get('Message', result)}"
    return {"dirac_ok": bool(result.get("OK")), "result": values}


def _run_one(request: dict[str, Any], db_path: str, key: str, row: dict[str, str]) -> None:
    conn = _db(db_path)
    try:
        claimed = conn.execute(
            "UPDATE dirac_jobs SET state='running', updated=? WHERE key=? AND state='queued'", (time.time(), key)
        ).rowcount
        if not claimed:
            return  # cancelled before it started
        job_dir = Path(request["jobs_dir"]) / key / str(int(time.time() * 1000))
        job_dir.mkdir(parents=True)
        child_request = {**request, "row": row, "dir": str(job_dir)}
        proc = subprocess.Popen(
            [sys.executable, __file__, "local-job"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(job_dir / "runner.log", "wb"),  # noqa: SIM115 - the child owns it
            start_new_session=True,
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"},
        )
        conn.execute("UPDATE dirac_jobs SET pid=? WHERE key=?", (proc.pid, key))
        out, _ = proc.communicate(json.dumps(child_request).encode())
        state = conn.execute("SELECT state FROM dirac_jobs WHERE key=?", (key,)).fetchone()
        if state and state[0] == "removed":
            return
        try:
            answer = json.loads(out.decode().strip().splitlines()[-1])
            values = answer["result"]
        except (ValueError, IndexError, KeyError):
            values = {"RawflowStderr": f"local DIRAC job ended with {proc.returncode} and no answer"}
        try:
            exit_code = int(json.loads(values.get("RawflowReport") or "{}").get("exit_code"))
        except (TypeError, ValueError):
            exit_code = proc.returncode or 80
        conn.execute(
            "UPDATE dirac_jobs SET state=?, exit_code=?, result=?, pid=NULL, updated=? WHERE key=? AND state='running'",
            ("done" if exit_code == 0 else "failed", exit_code, json.dumps(values), time.time(), key),
        )
    finally:
        conn.close()


def local_batch(request: dict[str, Any]) -> dict[str, Any]:
    rows = list(request["jobs"])
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not rows:
                    return
                row = rows.pop(0)
            _run_one(request, request["db"], row["key"], row)

    threads = [threading.Thread(target=worker) for _ in range(max(1, int(request.get("slots", 2))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {}


COMMANDS = {
    "wms-submit": wms_submit,
    "wms-status": wms_status,
    "wms-find": wms_find,
    "wms-outputs": wms_outputs,
    "wms-kill": wms_kill,
    "local-batch": local_batch,
    "local-job": local_job,
}


def main() -> None:
    # DIRAC logs to stdout: keep the real stdout for the one JSON answer.
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        request = json.loads(sys.stdin.read() or "{}")
        answer = COMMANDS[sys.argv[1]](request)
    except Exception as exc:  # one line back to the backend, which types it
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.flush()
    os.write(answer_fd, (json.dumps(answer) + "\n").encode())


if __name__ == "__main__":
    main()
