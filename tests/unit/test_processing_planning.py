from __future__ import annotations

from datetime import timedelta

import pytest

from rawflow.compute.base import JOB_KEY, JobOutcome, JobState
from rawflow.errors import ConfigError
from rawflow.processing.planning import (
    DQM,
    RAW2RTRAW,
    REC,
    Action,
    ReportedOutput,
    ReportError,
    RetryPolicy,
    attempt_key,
    batch_name,
    batches,
    check_output,
    decide,
    job_key,
    plan_conversions,
    plan_dqm,
    reported_input_events,
    reported_outputs,
)

NAME = "JUNO.001234.Physics.Global.ds-0.20251101083000.{:05d}"
RAW = [f"/juno/raw/2025/1101/{NAME.format(i)}.dat" for i in range(5)]
T0 = "root://127.0.0.1:1094//eos/ihep"


def test_keys_are_deterministic_valid_and_versioned() -> None:
    key = job_key(RAW2RTRAW, [RAW[0]])
    assert key == job_key(RAW2RTRAW, [RAW[0]]) == job_key(RAW2RTRAW, [RAW[0]], "1.0.0")
    assert key.startswith("raw2rtraw-v1.0.0-")
    assert key != job_key(RAW2RTRAW, [RAW[1]])
    assert key != job_key(REC, [RAW[0]])
    assert key != job_key(RAW2RTRAW, [RAW[0]], "2")  # a new payload version reprocesses
    assert job_key(DQM, RAW[:3]) == job_key(DQM, list(reversed(RAW[:3])))  # input order does not matter
    for attempt in (1, 7):
        assert JOB_KEY.fullmatch(attempt_key(key, attempt))
    assert attempt_key(key, 1) != attempt_key(key, 2)


def test_conversion_plan_and_specs() -> None:
    jobs = plan_conversions(RAW2RTRAW, [(lfn, 1234) for lfn in reversed(RAW)], block_id="20251101")
    assert [j.inputs for j in jobs] == [(lfn,) for lfn in RAW]  # sorted, one job per file
    job = jobs[0]
    assert job.outputs == (f"/juno/rtraw/2025/1101/{NAME.format(0)}.rtraw",)
    spec = job.spec(2, lambda lfn: T0 + lfn)
    assert spec.key == f"{job.key}.2"
    assert spec.payload == RAW2RTRAW
    assert spec.args == ("@in:" + T0 + RAW[0], "@out:" + T0 + job.outputs[0])  # the payload's IN OUT
    assert spec.labels["block"] == "20251101" and spec.labels["run"] == "1234"
    rec = plan_conversions(REC, [(job.outputs[0], 1234)], block_id="20251101")[0]
    assert rec.outputs == (f"/juno/esd/2025/1101/{NAME.format(0)}.esd",)
    with pytest.raises(ConfigError):
        plan_conversions(DQM, [(RAW[0], 1)], block_id="20251101")


def test_dqm_plan_one_job_per_run_output_first() -> None:
    rtraw = [f"/juno/rtraw/2025/1101/{NAME.format(i)}.rtraw" for i in range(3)]
    jobs = plan_dqm({1234: rtraw, 99: rtraw[:1]}, block_id="20251101")
    assert [j.run for j in jobs] == [99, 1234]
    spec = jobs[1].spec(1, lambda lfn: T0 + lfn)
    assert spec.args[0].endswith(".json") and spec.args[0].startswith("@out:" + T0 + "/juno/dqm/2025/1101/dqm.001234.")
    assert spec.args[1:] == tuple("@in:" + T0 + lfn for lfn in rtraw)
    # A run that gains a file gets a new DQM job.
    assert plan_dqm({1234: rtraw[:2]}, block_id="20251101")[0].key != jobs[1].key


def test_batches() -> None:
    items = list(range(450))
    assert [len(b) for b in batches(items, 200)] == [200, 200, 50]
    assert list(batches([], 200)) == []
    with pytest.raises(ConfigError):
        list(batches(items, 0))
    assert batch_name(RAW2RTRAW, "20251101", ["b", "a"]) == batch_name(RAW2RTRAW, "20251101", ["a", "b"])


@pytest.mark.parametrize(
    ("state", "released", "failures", "attempts", "action"),
    [
        (JobState.QUEUED, False, 0, 1, Action.WAIT),
        (JobState.RUNNING, False, 0, 1, Action.WAIT),
        (JobState.DONE, False, 0, 1, Action.CHECK),
        (JobState.FAILED, False, 0, 1, Action.RETRY_LATER),
        (JobState.FAILED, False, 1, 2, Action.RETRY_LATER),
        (JobState.FAILED, False, 2, 3, Action.GIVE_UP),  # the third failure of max_failures=3
        (JobState.HELD, False, 0, 1, Action.RELEASE),  # released once
        (JobState.HELD, True, 0, 1, Action.RESUBMIT),  # then removed and resubmitted
        (JobState.MISSING, False, 0, 1, Action.RESUBMIT),  # vanished
        (JobState.REMOVED, False, 0, 1, Action.RESUBMIT),
        (JobState.MISSING, False, 0, 6, Action.GIVE_UP),  # bounded
        (JobState.HELD, True, 0, 6, Action.GIVE_UP),
    ],
)
def test_retry_policy(state: JobState, released: bool, failures: int, attempts: int, action: Action) -> None:
    decision = decide(state, released=released, failures=failures, attempts=attempts, policy=RetryPolicy())
    assert decision.action is action


def test_give_up_reason_names_the_payload_error() -> None:
    decision = decide(
        JobState.FAILED,
        released=False,
        failures=2,
        attempts=3,
        policy=RetryPolicy(),
        reason="exit code 3: bad.dat: truncated event header",
    )
    assert decision.action is Action.GIVE_UP
    assert decision.reason == "failed 3 times, last: exit code 3: bad.dat: truncated event header"


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(backoff=timedelta(minutes=1), max_backoff=timedelta(minutes=5))
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [timedelta(minutes=m) for m in (1, 2, 4, 5)]
    with pytest.raises(ConfigError):
        RetryPolicy(max_failures=0)


def _outcome(report: dict[str, object]) -> JobOutcome:
    return JobOutcome(key="k.1", backend_id="1.0", state=JobState.DONE, exit_code=0, report=report)


def test_output_check() -> None:
    out = "/juno/rtraw/2025/1101/x.rtraw"
    outcome = _outcome(
        {
            "inputs": [{"url": T0 + RAW[0], "size": 10}],
            "payload_report": {"inputs": [{"name": "x.dat", "events": 100}]},
            "outputs": [{"url": T0 + out, "size": 2048, "adler32": "1a2b3c", "events": 100}],
        }
    )
    reported = reported_outputs(outcome, [out])
    assert reported[out] == ReportedOutput(out, 2048, "001a2b3c", 100)  # zero-padded
    assert reported_input_events(outcome) == 100
    assert check_output(reported[out], size=2048, adler32="001a2b3c", input_events=100) is None
    assert "size 2047" in str(check_output(reported[out], size=2047, adler32="001a2b3c", input_events=100))
    assert "adler32" in str(check_output(reported[out], size=2048, adler32="deadbeef", input_events=100))
    assert "99 in" in str(check_output(reported[out], size=2048, adler32="001a2b3c", input_events=99))
    with pytest.raises(ReportError, match="does not list"):
        reported_outputs(outcome, ["/juno/rtraw/2025/1101/other.rtraw"])
    with pytest.raises(ReportError, match="no outputs"):
        reported_outputs(_outcome({}), [out])
    assert reported_input_events(_outcome({"inputs": [{"url": "x"}]})) is None


def test_blocks_from_the_receivers_asset_uris() -> None:
    from rawflow.processing.planning import blocks_from_asset_uris

    uris = ["rawflow://blocks/RAW-20251102", "rawflow://blocks/RTRAW-20251101", "rawflow://blocks/RAW-20251101", ""]
    assert blocks_from_asset_uris([*uris, "rawflow://blocks/RAW-20251102"]) == ["20251101", "20251102"]
