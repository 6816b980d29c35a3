"""DIRAC WMS TEST DOUBLE — not a DIRAC server. Stands in for the ``Dirac`` client class in WMS mode for tests.

No DIRAC server (WMS, sandbox store, job monitoring) can run here, so the DIRAC backend's WMS code path is tested
against this class, loaded by rawflow.compute.dirac_runner (``client`` = this file) in place of
``DIRAC.Interfaces.API.Dirac.Dirac``. It implements the calls the runner makes, with DIRAC's ``S_OK``/``S_ERROR``
shapes: ``submitJob(job)`` (→ list of job ids for a parametric job), ``getJobStatus(ids)``,
``selectJobs(jobGroup=…)``, ``getJobAttributes(id)``, ``getOutputSandbox(id, outputDir, noJobDir)``, ``killJob``.

What is real: the ``Job`` object is DIRAC's; the parametric expansion is DIRAC's own server code
(``generateParametricJobs`` on the job's JDL); each expanded job is executed the way a pilot's job wrapper does,
``dirac-jobexec jobDescription.xml <its Arguments>`` in a fresh directory with its ExecutionEnvironment, and its
OutputSandbox files are what ``getOutputSandbox`` returns. What is left out: matching, pilots, sites,
proxies and authentication, rescheduling, the Stalled state, minor statuses beyond a few words.

State lives under ``./dirac-wms-double/`` of the current directory (each runner call is a new process).
``$RAWFLOW_DIRAC_DOUBLE_HOLD=1`` accepts jobs without running them (they stay Waiting): the submission
benchmark measures submission alone.
Standard library + DIRAC only (it runs in the DIRAC venv).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def S_OK(value: Any = None) -> dict[str, Any]:
    return {"OK": True, "Value": value}


def S_ERROR(message: str) -> dict[str, Any]:
    return {"OK": False, "Message": message}


class Dirac:
    def __init__(self) -> None:
        self.root = Path.cwd() / "dirac-wms-double"
        self.root.mkdir(exist_ok=True)
        self.index = self.root / "jobs.json"

    def _load(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.index.read_text()) if self.index.exists() else {"next": 1001, "jobs": {}}
        return data

    def _save(self, data: dict[str, Any]) -> None:
        tmp = self.index.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.index)

    def submitJob(self, job: Any, mode: str = "wms") -> dict[str, Any]:
        from DIRAC.Core.Utilities.ClassAd.ClassAdLight import ClassAd
        from DIRAC.WorkloadManagementSystem.Utilities.ParametricJob import generateParametricJobs

        if mode != "wms":
            return S_ERROR("the WMS double only takes mode='wms'")
        xml = job._toXML()
        classad = ClassAd("[" + job._toJDL() + "]")
        expanded = generateParametricJobs(classad)
        if not expanded["OK"]:
            return dict(expanded)
        data = self._load()
        ids = []
        for jdl in expanded["Value"]:
            ad = ClassAd(jdl)
            job_id = data["next"]
            data["next"] += 1
            job_dir = self.root / str(job_id)
            job_dir.mkdir()
            (job_dir / "jobDescription.xml").write_text(xml)
            env = dict(os.environ)
            for pair in ad.getListFromExpression("ExecutionEnvironment"):
                name, _, value = pair.partition("=")
                env[name] = shlex.split(value)[0] if value else ""
            argv = ["dirac-jobexec", *shlex.split(ad.getAttributeString("Arguments"))]
            if os.environ.get("RAWFLOW_DIRAC_DOUBLE_HOLD") == "1":
                data["jobs"][str(job_id)] = {
                    "JobName": ad.getAttributeString("JobName"),
                    "JobGroup": ad.getAttributeString("JobGroup"),
                    "OutputSandbox": [],
                    "pid": None,
                    "killed": False,
                    "held": True,
                    "submitted": time.time(),
                }
                ids.append(job_id)
                continue
            # The pilot's part: run the job, keep its exit code.
            proc = subprocess.Popen(
                ["/bin/sh", "-c", '"$@" > std.out 2> std.err; echo $? > .exit', "job", *argv],
                cwd=job_dir,
                env={**env, "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"},
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            data["jobs"][str(job_id)] = {
                "JobName": ad.getAttributeString("JobName"),
                "JobGroup": ad.getAttributeString("JobGroup"),
                "OutputSandbox": ad.getListFromExpression("OutputSandbox"),
                "pid": proc.pid,
                "killed": False,
                "submitted": time.time(),
            }
            ids.append(job_id)
        self._save(data)
        return S_OK(ids if len(ids) > 1 or int(classad.getAttributeInt("Parameters") or 0) else ids[0])

    def _status(self, job_id: str, job: dict[str, Any]) -> dict[str, str]:
        exit_file = self.root / job_id / ".exit"
        if job.get("held") and not job["killed"]:
            return {"Status": "Waiting", "MinorStatus": "Pilot Agent Submission", "ApplicationStatus": "Unknown"}
        if job["killed"]:
            return {"Status": "Killed", "MinorStatus": "Marked for termination", "ApplicationStatus": "Unknown"}
        if exit_file.exists() and exit_file.read_text().strip():
            code = int(exit_file.read_text().strip())
            if code == 0:
                return {"Status": "Done", "MinorStatus": "Execution Complete", "ApplicationStatus": "Unknown"}
            return {
                "Status": "Failed",
                "MinorStatus": "Application Finished With Errors",
                "ApplicationStatus": str(code),
            }
        return {"Status": "Running", "MinorStatus": "Application", "ApplicationStatus": "Unknown"}

    def getJobStatus(self, jobID: Any) -> dict[str, Any]:
        data = self._load()
        ids = [str(i) for i in (jobID if isinstance(jobID, list) else [jobID])]
        return S_OK({int(i): {**self._status(i, data["jobs"][i]), "Site": "ANY"} for i in ids if i in data["jobs"]})

    def selectJobs(self, jobGroup: str | None = None, printErrors: bool = True, **_: Any) -> dict[str, Any]:
        data = self._load()
        return S_OK([int(i) for i, job in data["jobs"].items() if jobGroup is None or job["JobGroup"] == jobGroup])

    def getJobAttributes(self, jobID: int, printOutput: bool = False) -> dict[str, Any]:
        job = self._load()["jobs"].get(str(jobID))
        if job is None:
            return S_ERROR(f"No job {jobID}")
        return S_OK({"JobID": str(jobID), "JobName": job["JobName"], "JobGroup": job["JobGroup"]})

    def getOutputSandbox(
        self,
        jobID: int,
        outputDir: str | None = None,
        oversized: bool = True,
        noJobDir: bool = False,
        unpack: bool = True,
    ) -> dict[str, Any]:
        job = self._load()["jobs"].get(str(jobID))
        if job is None:
            return S_ERROR(f"No job {jobID}")
        target = Path(outputDir or ".") if noJobDir else Path(outputDir or ".") / str(jobID)
        target.mkdir(parents=True, exist_ok=True)
        job_dir = self.root / str(jobID)
        # dirac-jobexec runs the step in the job dir: the wrapper's files are there.
        for name in job["OutputSandbox"]:
            if (job_dir / name).is_file():
                shutil.copyfile(job_dir / name, target / name)
        return S_OK(str(target))

    def killJob(self, jobID: Any) -> dict[str, Any]:
        data = self._load()
        for i in [str(j) for j in (jobID if isinstance(jobID, list) else [jobID])]:
            job = data["jobs"].get(i)
            if job is None or self._status(i, job)["Status"] in ("Done", "Failed"):
                continue
            job["killed"] = True
            try:
                if job["pid"]:
                    os.killpg(job["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._save(data)
        return S_OK()
