"""The DIRAC backend with the real DIRAC client (.venv-dirac): local execution, and the WMS code path against the
labelled WMS test double (rawflow.testing.dirac_double: DIRAC's own Job, parametric expansion and dirac-jobexec;
no server). Both pass the shared compute contract."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import rawflow.testing.dirac_double as dirac_double
from rawflow.compute import get_compute_backend
from rawflow.compute.base import JobHandle, JobSpec, JobState
from rawflow.compute.dirac_backend import DiracBackend
from tests.fixtures.condor import TEST_PAYLOADS
from tests.integration.compute_contract import ComputeContract, wait_terminal

DIRAC_PYTHON = Path(__file__).resolve().parents[2] / ".venv-dirac" / "bin" / "python"
pytestmark = pytest.mark.skipif(not DIRAC_PYTHON.exists(), reason="scripts/setup-dirac.sh was not run")


def make_backend(mode: str) -> DiracBackend:
    work = tempfile.mkdtemp(prefix=f"rawflow-dirac-{mode}-")
    client = dirac_double.__file__ if mode == "wms" else None
    backend = get_compute_backend(
        "dirac", mode=mode, work_dir=work, payloads=str(TEST_PAYLOADS), client=client, slots=2, timeout=60
    )
    assert isinstance(backend, DiracBackend)
    return backend


@pytest.fixture(scope="module", params=["local", "wms"])
def backend(request: pytest.FixtureRequest) -> Iterator[DiracBackend]:
    backend = make_backend(request.param)
    yield backend
    backend.close()


class TestDiracContract(ComputeContract):
    def batch_unit(self, handle: JobHandle) -> str:
        return handle.batch  # the parametric job (its JobGroup)


def test_wms_batch_is_one_parametric_job_with_the_key_as_job_name() -> None:
    backend = make_backend("wms")
    keys = [f"par-{i}" for i in range(3)]
    handles = backend.submit([JobSpec(key=k, payload="echo", args=(k,)) for k in keys], batch="par")
    wait_terminal(backend, keys)
    import json

    jobs = json.loads((backend.work_dir / "dirac-wms-double" / "jobs.json").read_text())["jobs"]
    assert sorted(j["JobName"] for j in jobs.values()) == keys
    assert {j["JobGroup"] for j in jobs.values()} == {"par"}
    assert sorted(jobs) == sorted(h.backend_id for h in handles)
    backend.close()


def test_wms_submission_lost_before_its_record_is_found_again() -> None:
    backend = make_backend("wms")
    job = JobSpec(key="lost-1", payload="echo")
    first = backend.submit([job], batch="lost")[0]
    # A crash between DIRAC's answer and the record: the record is gone, the batch is still pending.
    backend._conn.execute("DELETE FROM dirac_jobs")
    backend._conn.execute("UPDATE dirac_batches SET state='pending'")
    again = backend.submit([job], batch="lost-retry")[0]
    assert not again.new and again.backend_id == first.backend_id
    assert wait_terminal(backend, [job.key])[job.key].state is JobState.DONE
    backend.close()


def test_local_runner_killed_is_missing_and_resubmitted() -> None:
    import os
    import signal

    backend = make_backend("local")
    key = "vanish-1"
    backend.submit([JobSpec(key=key, payload="sleep", args=("60",))], batch="vanish")
    pid = backend._conn.execute("SELECT runner_pid FROM dirac_batches").fetchone()[0]
    os.killpg(pid, signal.SIGKILL)
    assert wait_terminal(backend, [key], timeout=30)[key].state is JobState.MISSING
    assert backend.submit([JobSpec(key=key, payload="echo")], batch="vanish-2")[0].new
    assert wait_terminal(backend, [key])[key].state is JobState.DONE
    backend.close()
