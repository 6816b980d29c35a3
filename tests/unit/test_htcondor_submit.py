"""Pure parts of the HTCondor backend and pool: submit description, quoting, state mapping, configs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from rawflow.compute.base import ComputeJobError, JobSpec, JobState
from rawflow.compute.htcondor_backend import (
    check_key,
    classad_string,
    item_data,
    job_outcome,
    job_state,
    job_status,
    key_constraint,
    latest_by_key,
    quote_arguments,
    submit_description,
)
from rawflow.grid.condor import client_config, pool_config


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_submit_description_runs_the_wrapper_without_shared_files() -> None:
    desc = submit_description("RAW-20261123-b1", job_lease_s=30)
    assert desc["executable"] == "/opt/rawflow/sw/bin/rawflow-job"
    assert desc["transfer_executable"] == "false"
    assert desc["output"] == desc["error"] == "/dev/null"
    assert desc["transfer_output_files"] == ""
    assert desc["+WantIOProxy"] == "true"
    assert desc["+RawflowKey"] == "$(key)"
    assert desc["+RawflowBatch"] == '"RAW-20261123-b1"'
    assert desc["job_lease_duration"] == "30"
    assert desc["arguments"] == "$(arguments)"


def test_bad_batch_name_is_refused() -> None:
    with pytest.raises(ComputeJobError):
        submit_description('x" || true')


def test_item_data_quotes_every_value() -> None:
    job = JobSpec(
        key="raw2rtraw:RAW_1.dat",
        payload="raw2rtraw",
        args=("@in:root://h:1//t0/RAW 1.dat", "@out:root://h:1//t0/it's.root"),
        labels={"block": "20261123", "note": 'a "b"'},
    )
    [row] = item_data([job])
    assert row["key"] == '"raw2rtraw:RAW_1.dat"'
    assert row["payload"] == '"raw2rtraw"'
    assert row["arguments"] == "\"'raw2rtraw' '@in:root://h:1//t0/RAW 1.dat' '@out:root://h:1//t0/it''s.root'\""
    assert row["labels"] == classad_string(json.dumps({"block": "20261123", "note": 'a "b"'}, sort_keys=True))


@pytest.mark.parametrize("bad", ["a\nb", "x$(HOME)", "r\r"])
def test_arguments_that_cannot_pass_unchanged_are_refused(bad: str) -> None:
    with pytest.raises(ComputeJobError):
        quote_arguments([bad])


def test_double_quotes_are_doubled_in_arguments() -> None:
    assert quote_arguments(['say "hi"']) == '"\'say ""hi""\'"'


def test_classad_string_escapes() -> None:
    assert classad_string('a"b\\c') == '"a\\"b\\\\c"'


@pytest.mark.parametrize("key", ["", "-lead", "a b", 'q"', "x" * 201, "a/b"])
def test_invalid_keys(key: str) -> None:
    with pytest.raises(ComputeJobError):
        check_key(key)


def test_key_constraint_is_sorted_and_deduplicated() -> None:
    assert key_constraint(["b", "a", "b"]) == 'member(RawflowKey, {"a", "b"})'
    with pytest.raises(ComputeJobError):
        key_constraint(['a", "b'])


@pytest.mark.parametrize(
    ("ad", "state"),
    [
        ({"JobStatus": 1}, JobState.QUEUED),
        ({"JobStatus": 2}, JobState.RUNNING),
        ({"JobStatus": 6}, JobState.RUNNING),
        ({"JobStatus": 7}, JobState.RUNNING),
        ({"JobStatus": 5}, JobState.HELD),
        ({"JobStatus": 3}, JobState.REMOVED),
        ({"JobStatus": 4, "ExitCode": 0}, JobState.DONE),
        ({"JobStatus": 4, "ExitCode": 3}, JobState.FAILED),
        ({"JobStatus": 4, "ExitBySignal": True, "ExitSignal": 9}, JobState.FAILED),
    ],
)
def test_state_mapping(ad: dict[str, object], state: JobState) -> None:
    assert job_state(ad) is state


def test_latest_by_key_prefers_a_live_job_over_a_removed_newer_one() -> None:
    ads = [
        {"RawflowKey": "k", "ClusterId": 5, "ProcId": 0, "JobStatus": 4, "ExitCode": 0},
        {"RawflowKey": "k", "ClusterId": 7, "ProcId": 1, "JobStatus": 3},
        {"RawflowKey": "j", "ClusterId": 2, "ProcId": 0, "JobStatus": 3},
        {"RawflowKey": "j", "ClusterId": 3, "ProcId": 0, "JobStatus": 1},
        {"ClusterId": 9, "ProcId": 0, "JobStatus": 1},  # not ours
    ]
    chosen = latest_by_key(ads)
    assert (chosen["k"]["ClusterId"], chosen["j"]["ClusterId"]) == (5, 3)


def test_status_and_outcome_of_ads() -> None:
    held = {"RawflowKey": "k", "ClusterId": 3, "ProcId": 2, "JobStatus": 5, "HoldReason": "disk full"}
    status = job_status("k", held)
    assert (status.backend_id, status.state, status.hold_reason, status.exit_code) == (
        "3.2",
        JobState.HELD,
        "disk full",
        None,
    )
    assert job_status("k", None).state is JobState.MISSING
    # A hold through the bindings (an operator's script) leaves HoldReason empty: the code says who held it.
    by_hand = {**held, "HoldReason": "", "HoldReasonCode": 1}
    assert job_status("k", by_hand).hold_reason == "by a user or an administrator (condor_hold, HoldReasonCode 1)"
    assert job_status("k", {**held, "HoldReason": "", "HoldReasonCode": 13}).hold_reason == "HoldReasonCode 13"
    assert job_status("k", {**held, "JobStatus": 2, "HoldReasonCode": 1}).hold_reason is None  # running again
    report = {"outputs": [{"url": "root://x//f", "size": 1, "adler32": "00000001", "events": 0}]}
    failed = {
        "ClusterId": 3,
        "ProcId": 0,
        "JobStatus": 4,
        "ExitCode": 3,
        "RawflowReport": b64(json.dumps(report)),
        "RawflowStderr": b64('first\nmalformed RAW: "bad" ünïcode\n'),
        "RawflowStdout": "not base64!",
    }
    outcome = job_outcome("k", failed)
    assert outcome.state is JobState.FAILED and outcome.exit_code == 3
    assert outcome.report == report
    assert outcome.stdout_tail == ""
    assert outcome.reason == 'exit code 3: malformed RAW: "bad" ünïcode'
    removed = job_outcome("k", {"ClusterId": 1, "ProcId": 0, "JobStatus": 3, "RemoveReason": "via condor_rm"})
    assert removed.state is JobState.REMOVED and removed.hold_reason == "via condor_rm"
    assert (
        job_outcome("k", {"ClusterId": 1, "ProcId": 0, "JobStatus": 4, "ExitCode": 0, "RawflowReport": b64("{")}).report
        == {}
    )


def test_pool_config_has_every_needed_setting() -> None:
    text = pool_config(port=40123, host="vm", num_cpus=3)
    lines = {
        line.split("=")[0].strip(): line.split("=", 1)[1].strip()
        for line in text.splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert lines["COLLECTOR_HOST"] == "127.0.0.1:40123"
    assert lines["SHARED_PORT_PORT"] == "40123"
    assert lines["NUM_CPUS"] == "3"
    assert lines["MOUNT_UNDER_SCRATCH"] == "" and lines["BASE_CGROUP"] == ""
    assert lines["ENABLE_IPV6"] == "False"
    assert lines["LOCAL_CONFIG_DIR"] == ""  # the chroot's own config.d is not read
    assert lines["SEC_DEFAULT_AUTHENTICATION_METHODS"] == "FS, IDTOKENS"
    assert lines["LOCAL_DIR"] == "/pool"


def test_client_config() -> None:
    text = client_config(port=40123, host="vm", token_dir=Path("/g/tokens"))
    assert "COLLECTOR_HOST = 127.0.0.1:40123" in text
    assert "SEC_TOKEN_DIRECTORY = /g/tokens" in text
    assert "SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS" in text


def test_job_wrapper_pure_parts(tmp_path: Path) -> None:
    import zlib

    from rawflow.compute import job_wrapper
    from rawflow.compute.base import STAGE_IN, STAGE_OUT, stage_in, stage_out

    assert (job_wrapper.IN, job_wrapper.OUT) == (STAGE_IN, STAGE_OUT)
    assert stage_in("root://h//a") == "@in:root://h//a" and stage_out("root://h//b") == "@out:root://h//b"
    data = b"x" * 3_000_000
    (tmp_path / "f").write_bytes(data)
    assert job_wrapper.adler32_of(tmp_path / "f") == f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"
    value = job_wrapper.classad_value('a "quoted"\\ line\n')
    assert "\\" not in value and value.count('"') == 2
    assert base64.b64decode(value[1:-1]).decode() == 'a "quoted"\\ line\n'
    assert job_wrapper.local_name("root://h:1//t0/dir/RAW.dat", 0) == "RAW.dat"
    assert job_wrapper.local_name("root://h:1//", 2) == "file2"
    report = {"outputs": [{"path": "/scratch/out/RTRAW.root", "events": 12}]}
    assert job_wrapper.events_of(report, "RTRAW.root") == 12
    assert job_wrapper.events_of(report, "other.root") is None
    assert job_wrapper.events_of(None, "x") is None
    assert job_wrapper.tail("é" * 5000).encode()[-10:] == ("é" * 5).encode()
    assert len(job_wrapper.tail("é" * 5000).encode()) <= 4096


def test_a_long_report_is_recorded_in_parts_and_read_back_whole() -> None:
    """condor_chirp refuses a command line over ~5 KB: a DQM report over 12 files was lost in one attribute."""
    from rawflow.compute import htcondor_backend, job_wrapper

    report = json.dumps({"inputs": [{"name": f"JUNO.{i:06d}.rtraw", "events": i} for i in range(400)]})
    parts = job_wrapper.attr_parts("RawflowReport", report)
    assert len(parts) > 1 and all(len(literal) <= job_wrapper.CHIRP_PART + 2 for _, literal in parts)
    assert [name for name, _ in parts[:3]] == ["RawflowReport", "RawflowReport_1", "RawflowReport_2"]
    assert set(htcondor_backend.RESULT_ATTRS) >= {name for name, _ in parts}
    ad = {name: literal[1:-1] for name, literal in parts}
    assert htcondor_backend._text_attr(ad, "RawflowReport") == report
    assert job_wrapper.attr_parts("RawflowStdout", "") == [("RawflowStdout", '""')]
    with pytest.raises(ValueError, match="over"):
        job_wrapper.attr_parts("RawflowStdout", "x" * (job_wrapper.CHIRP_PART * job_wrapper.CHIRP_MAX_PARTS))
