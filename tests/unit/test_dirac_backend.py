"""Pure parts of the DIRAC backend: state mapping, the wrapper's argument encoding, outcomes from result files."""

from __future__ import annotations

import json

import pytest

from rawflow.compute.base import ComputeJobError, JobSpec, JobState
from rawflow.compute.dirac_backend import encode_argv, job_state, outcome_from_result
from rawflow.compute.job_wrapper import decode_argv


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("Received", JobState.QUEUED),
        ("Waiting", JobState.QUEUED),
        ("Matched", JobState.QUEUED),
        ("Running", JobState.RUNNING),
        ("Completing", JobState.RUNNING),
        ("Stalled", JobState.HELD),
        ("Done", JobState.DONE),
        ("Failed", JobState.FAILED),
        ("Killed", JobState.REMOVED),
        ("Deleted", JobState.REMOVED),
        ("SomethingNew", JobState.FAILED),
    ],
)
def test_dirac_states_map_to_job_states(status: str, state: JobState) -> None:
    assert job_state({"Status": status, "MinorStatus": "x"}) is state


def test_arguments_round_trip_through_the_wrapper_encoding_without_padding() -> None:
    for args in [(), ("a",), ('it\'s "quoted"', "ü ñ", "a=b=c", "@in:root://h//p")]:
        value = encode_argv(JobSpec(key="k", payload="rec", args=args))
        assert "=" not in value and " " not in value  # dirac-jobexec splits -p name=value at '='
        assert decode_argv(["--argv-b64", value]) == ["rec", *args]
    assert decode_argv(["rec", "x"]) == ["rec", "x"]  # HTCondor passes plain arguments


def test_bad_payload_name_is_a_job_error() -> None:
    with pytest.raises(ComputeJobError):
        encode_argv(JobSpec(key="k", payload="rm -rf"))


def test_outcome_from_the_wrappers_result_file() -> None:
    report = {"exit_code": 3, "outputs": []}
    values = {"RawflowReport": json.dumps(report), "RawflowStderr": "x\nmalformed input 'a': bad magic"}
    outcome = outcome_from_result("k", "1001", JobState.FAILED, values)
    assert outcome.exit_code == 3 and outcome.reason == "exit code 3: malformed input 'a': bad magic"
    lost = outcome_from_result("k", "1001", JobState.FAILED, {"RawflowStderr": "no output sandbox"})
    assert lost.exit_code == 80 and lost.report == {}
