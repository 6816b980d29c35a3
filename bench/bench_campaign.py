"""A campaign's submission rate: sub-jobs created and submitted per second through Rawflow vs the same
parametric job submitted directly with the DIRAC API, in the same run.

Rawflow's path is the production one: the campaign's planner over a catalogue block complete at the input site
(split, deterministic keys), the jobs table (SUBMITTING recorded before the call), and the DIRAC backend in WMS
mode (one parametric job per batch through the runner in .venv-dirac). The direct path builds the same
parametric ``Job`` (setParameterSequence over the same keys and arguments) and calls ``Dirac().submitJob`` in
one DIRAC process. No DIRAC server runs here: both submit to the labelled WMS test double
(rawflow.testing.dirac_double) with ``RAWFLOW_DIRAC_DOUBLE_HOLD=1`` (jobs accepted, not run), which does DIRAC's
own parametric expansion of the JDL; so the figures compare the clients' overheads, not a WMS's.

Usage: .venv/bin/python bench/bench_campaign.py [--files 500] [--batch 500]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from rawflow.catalogue.base import FileRecord, ReplicaState  # noqa: E402
from rawflow.catalogue.sql import SqlCatalogue  # noqa: E402
from rawflow.compute.dirac_backend import DiracBackend, encode_argv  # noqa: E402
from rawflow.naming import DataType  # noqa: E402
from rawflow.processing.campaign_round import campaign_context  # noqa: E402
from rawflow.processing.campaigns import load_campaign  # noqa: E402
from rawflow.processing.jobs import JobStore  # noqa: E402
from rawflow.processing.keepup import KeepupContext, submit_round  # noqa: E402
from rawflow.sites import default_sites_path, load_sites  # noqa: E402
from rawflow.testing import dirac_double  # noqa: E402

DIRAC_PYTHON = ROOT / ".venv-dirac" / "bin" / "python"
BLOCK = "20261121"

DIRECT = r"""
import importlib.util, json, sys, time
t0 = time.monotonic()
from DIRAC.Interfaces.API.Job import Job
spec = importlib.util.spec_from_file_location("double", sys.argv[1]); mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
rows = json.load(sys.stdin)
t1 = time.monotonic()
job = Job()
job.setJobGroup("direct")
job.setParameterSequence("key", [r["key"] for r in rows])
job.setParameterSequence("argv", [r["argv"] for r in rows])
job.setName("%(key)s")
job.setExecutable(sys.argv[2], arguments="--argv-b64 %(argv)s")
result = mod.Dirac().submitJob(job)
t2 = time.monotonic()
assert result["OK"], result
print(json.dumps({"ids": len(result["Value"]), "imports": t1 - t0, "submit": t2 - t1}))
"""


def files(n: int) -> list[FileRecord]:
    day = date(2026, 11, 21)
    return [
        FileRecord(
            lfn=f"/juno/rtraw/2026/1121/JUNO.005021.Physics.Global.ds-0.20261121083000.{i:05d}.rtraw",
            size=1000,
            adler32=f"{i:08x}",
            data_type=DataType.RTRAW,
            block_id=BLOCK,
            run_number=5021,
            stream="Global",
            received_at=datetime(day.year, day.month, day.day, tzinfo=UTC),
        )
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--batch", type=int, default=500, help="sub-jobs per parametric job")
    args = parser.parse_args()
    if not DIRAC_PYTHON.exists():
        raise SystemExit("run scripts/setup-dirac.sh first")
    os.environ["RAWFLOW_DIRAC_DOUBLE_HOLD"] = "1"
    work = Path(tempfile.mkdtemp(prefix="rawflow-bench-campaign-"))
    db = f"sqlite:///{work}/catalogue.db"
    catalogue = SqlCatalogue(db)
    records = files(args.files)
    sites = load_sites(default_sites_path())
    catalogue.register_files(records, site=sites.tier0.name, state=ReplicaState.VALIDATED)
    catalogue.set_replica_state([r.lfn for r in records], "CNAF-STORM", ReplicaState.VALIDATED)
    catalogue.close_block(records[0].data_type, BLOCK)
    campaign = load_campaign(ROOT / "config" / "campaigns" / "rerec-2026-11.yaml")
    backend = DiracBackend(work_dir=str(work / "rawflow"), mode="wms", client=dirac_double.__file__, timeout=600)
    jobs = JobStore(db)
    ctx = campaign_context(
        KeepupContext(
            catalogue=catalogue,
            backend=backend,
            storage=None,
            sites=sites,
            jobs=jobs,  # type: ignore[arg-type]
            batch_size=args.batch,
        ),
        campaign,
    )

    started = time.monotonic()
    report = submit_round(ctx, BLOCK)
    rawflow_s = time.monotonic() - started
    submitted = report.total_submitted
    assert submitted == args.files, report.to_dict()
    started = time.monotonic()
    again = submit_round(ctx, BLOCK).total_submitted
    rerun_s = time.monotonic() - started

    # The same parametric job, directly: the keys and wrapper arguments Rawflow sent.
    records_sent = jobs.list_jobs(key_prefix="c.")
    specs = [r.to_planned().spec(r.attempts, ctx.url) for r in records_sent]
    rows = [{"key": s.key, "argv": encode_argv(s)} for s in specs]
    direct_dir = work / "direct"
    direct_dir.mkdir()
    started = time.monotonic()
    proc = subprocess.run(
        [str(DIRAC_PYTHON), "-c", DIRECT, dirac_double.__file__, str(backend.sw_dir / "bin" / "rawflow_job.py")],
        input=json.dumps(rows),
        capture_output=True,
        text=True,
        cwd=direct_dir,
        check=True,
        env={**os.environ, "PATH": f"{DIRAC_PYTHON.parent}:{os.environ['PATH']}"},
    )
    direct_wall = time.monotonic() - started
    direct = json.loads(proc.stdout.strip().splitlines()[-1])
    assert direct["ids"] == args.files

    result = {
        "files": args.files,
        "parametric_jobs": -(-args.files // args.batch),
        "rawflow": {"seconds": round(rawflow_s, 2), "sub_jobs_per_s": round(submitted / rawflow_s, 1)},
        "rawflow_rerun": {"seconds": round(rerun_s, 2), "submitted": again},
        "direct_dirac_api": {
            "seconds_wall": round(direct_wall, 2),
            "seconds_submit_only": round(direct["submit"], 2),
            "seconds_imports": round(direct["imports"], 2),
            "sub_jobs_per_s": round(args.files / direct_wall, 1),
            "sub_jobs_per_s_submit_only": round(args.files / direct["submit"], 1),
        },
        "ratio_rawflow_vs_direct_wall": round(rawflow_s / direct_wall, 2),
    }
    print(json.dumps(result, indent=2))
    backend.close()
    catalogue.close()
    jobs.close()


if __name__ == "__main__":
    main()
