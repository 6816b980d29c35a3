"""The local HTCondor pool: start time, Rawflow's backend (rawflow-job wrapper, one cluster per batch) for 1 and
N jobs, side by side with bare htcondor2 submitting the same number of trivial jobs (/bin/true) in one cluster.

Usage: .venv/bin/python bench/bench_condor_submit.py [--jobs 50] [--bare 200] [--cpus 4]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT))

from rawflow.compute.base import JobSpec, JobState  # noqa: E402
from rawflow.compute.htcondor_backend import HTCondorBackend  # noqa: E402
from rawflow.grid.condor import ensure_installed, start_pool, stop_pool  # noqa: E402
from tests.fixtures.condor import TEST_PAYLOADS  # noqa: E402


def wait_done(backend: HTCondorBackend, keys: list[str], timeout: float = 900) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        states = backend.poll(keys)
        if all(s.state.terminal for s in states.values()):
            bad = [s for s in states.values() if s.state is not JobState.DONE]
            if bad:
                raise SystemExit(f"jobs failed: {bad[:3]}")
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"jobs not done after {timeout} s")


def rawflow_run(backend: HTCondorBackend, n: int) -> tuple[float, float]:
    tag = uuid.uuid4().hex[:8]
    jobs = [JobSpec(key=f"bench-{tag}-{i}", payload="echo") for i in range(n)]
    started = time.monotonic()
    backend.submit(jobs, batch=f"bench-{tag}")
    submit = time.monotonic() - started
    wait_done(backend, [j.key for j in jobs])
    return submit, time.monotonic() - started


def bare_run(backend: HTCondorBackend, n: int) -> tuple[float, float]:
    import htcondor2

    backend.poll(["warm-up"])  # loads the client config
    schedd = backend._get_schedd()
    tag = uuid.uuid4().hex[:8]
    description = {
        "executable": "/bin/true",
        "transfer_executable": "false",
        "should_transfer_files": "YES",
        "output": "/dev/null",
        "error": "/dev/null",
        "initialdir": "/tmp",
        "+RawflowKey": '"bare-' + tag + '-$(ProcId)"',
    }
    started = time.monotonic()
    result = schedd.submit(htcondor2.Submit(description), count=n)
    submit = time.monotonic() - started
    cluster = result.cluster()
    while True:
        if not schedd.query(constraint=f"ClusterId == {cluster}", projection=["ProcId"]):
            break
        time.sleep(0.2)
    return submit, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--bare", type=int, default=200)
    parser.add_argument("--cpus", type=int, default=4)
    args = parser.parse_args()
    ensure_installed()
    state_dir = Path(tempfile.mkdtemp(prefix="rawflow-bench-condor-"))
    try:
        started = time.monotonic()
        pool = start_pool(state_dir, num_cpus=args.cpus, extra_software={"rawflow/payloads": TEST_PAYLOADS})
        print(f"pool start (slot visible):            {time.monotonic() - started:6.2f} s   ({args.cpus} slots)")
        backend = HTCondorBackend(condor_config=str(pool.client_config_path), timeout=60)
        for n in (1, args.jobs):
            submit, done = rawflow_run(backend, n)
            print(f"rawflow backend, {n:4d} job(s):         submit {submit:6.3f} s, submit->all done {done:6.2f} s")
        for n in (args.jobs, args.bare):
            submit, done = bare_run(backend, n)
            print(
                f"bare htcondor2,  {n:4d} /bin/true jobs: submit {submit:6.3f} s, submit->all left queue {done:6.2f} s"
            )
        backend.close()
    finally:
        stop_pool(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
