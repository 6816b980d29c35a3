"""The contract every :class:`~rawflow.compute.base.ComputeBackend` must pass.

Subclass :class:`ComputeContract` in a ``test_*.py`` module and provide the fixture ``backend`` (the backend
under test, its jobs able to run the test payloads of tests/fixtures/condor_payloads as ``rawflow.payloads``:
``echo``, ``fail``, ``sleep SECONDS``, ``copy IN OUT``) and implement :meth:`batch_unit` (the backend's unit
of one batch from a handle: the HTCondor cluster, the DIRAC parametric job). Keys are fresh per test, so the
suite can share one pool with other tests.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import pytest

from rawflow.compute.base import (
    ComputeBackend,
    ComputeJobError,
    JobHandle,
    JobSpec,
    JobState,
    JobStatus,
)

WAIT = 180.0  # bound of every wait for jobs (a loaded 2-core CI machine)


def wait_terminal(backend: ComputeBackend, keys: Sequence[str], timeout: float = WAIT) -> dict[str, JobStatus]:
    deadline = time.monotonic() + timeout
    while True:
        states = backend.poll(keys)
        if all(s.state.terminal for s in states.values()):
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not terminal after {timeout:.0f} s: {states}")
        time.sleep(0.3)


def wait_state(backend: ComputeBackend, key: str, wanted: set[JobState], timeout: float = WAIT) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = backend.poll([key])[key]
        if status.state in wanted:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{key}: {status.state} after {timeout:.0f} s, wanted {wanted}")
        time.sleep(0.2)


class ComputeContract:
    def batch_unit(self, handle: JobHandle) -> str:
        raise NotImplementedError

    @pytest.fixture
    def prefix(self) -> str:
        return f"t-{uuid.uuid4().hex[:10]}"

    def test_is_a_compute_backend(self, backend: ComputeBackend) -> None:
        assert isinstance(backend, ComputeBackend)

    def test_batch_is_one_unit_and_every_job_is_done(self, backend: ComputeBackend, prefix: str) -> None:
        jobs = [JobSpec(key=f"{prefix}-{i}", payload="echo", args=(f"arg {i}", 'it\'s "quoted"')) for i in range(5)]
        handles = backend.submit(jobs, batch=f"{prefix}-batch")
        assert [h.key for h in handles] == [j.key for j in jobs]
        assert all(h.new for h in handles)
        assert len({self.batch_unit(h) for h in handles}) == 1
        assert len({h.backend_id for h in handles}) == 5
        states = wait_terminal(backend, [j.key for j in jobs])
        assert {s.state for s in states.values()} == {JobState.DONE}
        outcomes = backend.collect([j.key for j in jobs])
        assert set(outcomes) == {j.key for j in jobs}
        for i, job in enumerate(jobs):
            outcome = outcomes[job.key]
            assert outcome.state is JobState.DONE and outcome.exit_code == 0 and outcome.reason == "done"
            assert outcome.backend_id == handles[i].backend_id
            # Arguments arrive unchanged (spaces and quotes), the payload's report comes back.
            assert outcome.report["payload_report"]["args"] == [f"arg {i}", 'it\'s "quoted"']
            assert "echo running as uid" in outcome.stderr_tail

    def test_resubmitting_the_same_keys_submits_nothing(self, backend: ComputeBackend, prefix: str) -> None:
        jobs = [JobSpec(key=f"{prefix}-{i}", payload="echo") for i in range(3)]
        first = backend.submit(jobs, batch=f"{prefix}-a")
        again = backend.submit(jobs, batch=f"{prefix}-b")  # while queued or running
        assert [h.new for h in again] == [False] * 3
        assert [h.backend_id for h in again] == [h.backend_id for h in first]
        wait_terminal(backend, [j.key for j in jobs])
        extra = JobSpec(key=f"{prefix}-new", payload="echo")
        after = backend.submit([*jobs, extra], batch=f"{prefix}-c")  # after they finished: still found
        assert [h.new for h in after] == [False, False, False, True]
        assert [h.backend_id for h in after[:3]] == [h.backend_id for h in first]
        wait_terminal(backend, [extra.key])

    def test_a_failing_payload_is_failed_with_exit_code_and_stderr(self, backend: ComputeBackend, prefix: str) -> None:
        key = f"{prefix}-bad"
        backend.submit([JobSpec(key=key, payload="fail", args=("RAW_bad.dat",))], batch=prefix)
        status = wait_terminal(backend, [key])[key]
        assert status.state is JobState.FAILED and status.exit_code == 3
        outcome = backend.collect([key])[key]
        assert outcome.state is JobState.FAILED and outcome.exit_code == 3
        assert "malformed input 'RAW_bad.dat': bad magic" in outcome.stderr_tail
        assert outcome.reason == "exit code 3: malformed input 'RAW_bad.dat': bad magic"

    def test_cancel_removes_and_collect_returns_only_terminal(self, backend: ComputeBackend, prefix: str) -> None:
        slow, fast = f"{prefix}-slow", f"{prefix}-fast"
        backend.submit(
            [JobSpec(key=slow, payload="sleep", args=("120",)), JobSpec(key=fast, payload="echo")], batch=prefix
        )
        wait_state(backend, fast, {JobState.DONE})
        assert backend.poll([slow])[slow].state in (JobState.QUEUED, JobState.RUNNING)
        assert set(backend.collect([slow, fast])) == {fast}  # the unfinished job is left out
        backend.cancel([slow, f"{prefix}-unknown"])  # unknown keys are ignored
        assert wait_state(backend, slow, {JobState.REMOVED}).state is JobState.REMOVED
        assert backend.collect([slow])[slow].state is JobState.REMOVED
        backend.cancel([slow])  # again: nothing to do
        # A removed key may be submitted again: it gets a new job.
        handle = backend.submit([JobSpec(key=slow, payload="echo")], batch=f"{prefix}-again")[0]
        assert handle.new
        assert wait_terminal(backend, [slow])[slow].state is JobState.DONE

    def test_unknown_key_is_missing(self, backend: ComputeBackend, prefix: str) -> None:
        status = backend.poll([f"{prefix}-nobody"])[f"{prefix}-nobody"]
        assert status.state is JobState.MISSING and status.backend_id is None

    def test_invalid_key_or_same_key_twice_is_a_job_error(self, backend: ComputeBackend, prefix: str) -> None:
        with pytest.raises(ComputeJobError):
            backend.poll(["bad key with spaces"])
        job = JobSpec(key=f"{prefix}-dup", payload="echo")
        with pytest.raises(ComputeJobError):
            backend.submit([job, job], batch=prefix)
        assert backend.poll([job.key])[job.key].state is JobState.MISSING  # nothing was submitted
