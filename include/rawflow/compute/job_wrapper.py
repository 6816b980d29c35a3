"""rawflow-job: the wrapper every Rawflow job runs on the pool (deployed as /opt/rawflow/sw/bin/rawflow-job).

    rawflow-job PAYLOAD ARG...

Each ARG is passed to ``python -m rawflow.payloads PAYLOAD ...`` in order; ``@in:URL`` is first staged in with
``xrdcp`` and replaced by the local file, ``@out:URL`` is replaced by a local path whose file is staged out with
``xrdcp -f`` after the payload succeeded (and verified with the size and adler32 computed here). Nothing relies
on a shared file system: data moves over xrootd only, as on a real pool.

The result (the payload's JSON report, per output {url, size, adler32, events}, and the tails of stdout and
stderr) is written into the job's own ClassAd with ``condor_chirp set_job_attr`` (attributes RawflowReport,
RawflowStdout, RawflowStderr; base64 of UTF-8). Why chirp rather than output-file transfer: the ad lives in the schedd and stays
in its history after the job left the queue, so the backend reads the outcome with the same query it polls
with, from any machine, with no sandbox to retrieve or clean up, and no race with the job leaving the queue.

Outside HTCondor (no job ad: DIRAC jobs, ``$_CONDOR_JOB_AD`` unset) the same three values are written as JSON
to ``rawflow-result.json`` in the job's directory (a DIRAC output-sandbox file). ``--argv-b64 B64`` passes
``PAYLOAD ARG...`` as unpadded URL-safe base64 of a JSON list, so arguments cross DIRAC's JDL and workflow quoting unchanged.
``$RAWFLOW_PAYLOAD_PYTHON`` names the payloads' interpreter (default: the wrapper's), ``$RAWFLOW_SW`` the software
area (default: the parent of this file's directory).

Exit code: the payload's (0 ok; 3 malformed input, permanent), or 80 wrapper error, 81 stage-in failed,
82 stage-out failed (transient: the storage may come back). Standard library only; runs on Python 3.13.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

IN, OUT = "@in:", "@out:"  # = rawflow.compute.base.STAGE_IN/STAGE_OUT (this file runs standalone)
WRAPPER_ERROR, STAGE_IN_FAILED, STAGE_OUT_FAILED = 80, 81, 82
TAIL_BYTES = 4096
CHIRP = "/usr/libexec/condor/condor_chirp"
RESULT_FILE = "rawflow-result.json"
# /opt/rawflow/sw; $RAWFLOW_SW where the job system runs a copy of this file (DIRAC's local execution).
SW = Path(os.environ.get("RAWFLOW_SW") or Path(__file__).resolve().parents[1])
XRDCP_TIMEOUT = int(os.environ.get("RAWFLOW_XRDCP_TIMEOUT", "600"))
PAYLOAD_TIMEOUT = int(os.environ.get("RAWFLOW_PAYLOAD_TIMEOUT", "7200"))


def adler32_of(path: Path) -> str:
    value = 1
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            value = zlib.adler32(chunk, value)
    return f"{value & 0xFFFFFFFF:08x}"


def tail(text: str, limit: int = TAIL_BYTES) -> str:
    data = text.encode("utf-8", "replace")
    return data[-limit:].decode("utf-8", "replace") if len(data) > limit else text


def classad_value(text: str) -> str:
    """The text as a ClassAd string literal of its base64: chirp parses the value with the old ClassAd syntax,
    in which backslash escapes do not round-trip, so the value carries no quote or backslash at all."""
    return '"' + base64.b64encode(text.encode("utf-8")).decode("ascii") + '"'


CHIRP_PART = 4000
"""Base64 characters per chirp call: condor_chirp refuses a command line longer than about 5 KB (a DQM report
over 12 files did not fit in one), so a long value goes into Name, Name_1, Name_2, … (see attr_parts)."""
CHIRP_MAX_PARTS = 64


def attr_parts(name: str, value: str) -> list[tuple[str, str]]:
    """The (attribute, ClassAd literal) pairs that carry ``value``: its base64 cut into CHIRP_PART pieces."""
    encoded = classad_value(value)[1:-1]
    pieces = [encoded[i : i + CHIRP_PART] for i in range(0, len(encoded), CHIRP_PART)] or [""]
    if len(pieces) > CHIRP_MAX_PARTS:
        raise ValueError(f"{name} is {len(encoded)} base64 characters, over {CHIRP_MAX_PARTS} × {CHIRP_PART}")
    return [(name if i == 0 else f"{name}_{i}", f'"{piece}"') for i, piece in enumerate(pieces)]


def chirp(name: str, value: str) -> None:
    try:
        for attr, literal in attr_parts(name, value):
            subprocess.run([CHIRP, "set_job_attr", attr, literal], timeout=60, check=True, capture_output=True)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        print(f"rawflow-job: could not record {name} in the job ad: {exc}", file=sys.stderr)


def local_name(url: str, index: int) -> str:
    name = Path(urlparse(url).path).name
    return name if name and name not in (".", "..") else f"file{index}"


def xrdcp(src: str, dst: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["xrdcp", "--nopbar", *extra, src, dst], capture_output=True, text=True, timeout=XRDCP_TIMEOUT
    )


def events_of(payload_report: Any, filename: str) -> int | None:
    """The event count the payload reports for the output ``filename`` (any entry naming that file)."""
    entries = payload_report.get("outputs", []) if isinstance(payload_report, dict) else []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and any(isinstance(v, str) and Path(v).name == filename for v in entry.values()):
            events = entry.get("events")
            return int(events) if isinstance(events, int) else None
    return None


def in_condor() -> bool:
    return bool(os.environ.get("_CONDOR_JOB_AD") or os.environ.get("_CONDOR_SCRATCH_DIR"))


def record(values: dict[str, str]) -> None:
    """The job's result: in the job ad (HTCondor, chirp) or in RESULT_FILE (elsewhere)."""
    if in_condor():
        for name, value in values.items():
            chirp(name, value)
        return
    try:
        Path(RESULT_FILE).write_text(json.dumps(values, ensure_ascii=True))
    except OSError as exc:
        print(f"rawflow-job: could not write {RESULT_FILE}: {exc}", file=sys.stderr)


def decode_argv(argv: list[str]) -> list[str]:
    if len(argv) == 2 and argv[0] == "--argv-b64":
        text = argv[1] + "=" * (-len(argv[1]) % 4)  # sent unpadded
        decoded = json.loads(base64.urlsafe_b64decode(text.encode("ascii")))
        if not isinstance(decoded, list) or not all(isinstance(a, str) for a in decoded):
            raise ValueError("--argv-b64 must hold a JSON list of strings")
        return decoded
    return argv


def run(argv: list[str]) -> int:
    argv = decode_argv(argv)
    if not argv:
        print("usage: rawflow-job PAYLOAD ARG...", file=sys.stderr)
        return WRAPPER_ERROR
    payload, raw_args = argv[0], argv[1:]
    work = Path.cwd()
    (work / "in").mkdir(exist_ok=True)
    (work / "out").mkdir(exist_ok=True)
    args: list[str] = []
    inputs: list[tuple[str, Path]] = []
    outputs: list[tuple[str, Path]] = []
    for i, arg in enumerate(raw_args):
        if arg.startswith(IN):
            url = arg[len(IN) :]
            path = work / "in" / local_name(url, i)
            inputs.append((url, path))
            args.append(str(path))
        elif arg.startswith(OUT):
            url = arg[len(OUT) :]
            path = work / "out" / local_name(url, i)
            outputs.append((url, path))
            args.append(str(path))
        else:
            args.append(arg)
    report: dict[str, Any] = {"payload": payload, "inputs": [], "outputs": [], "timings": {}}
    errors: list[str] = []
    stdout = ""
    code = 0

    started = time.monotonic()
    for url, path in inputs:
        result = xrdcp(url, str(path))
        if result.returncode != 0:
            errors.append(f"stage-in of {url!r} failed: {result.stderr.strip()[-500:]}")
            code = STAGE_IN_FAILED
            break
        report["inputs"].append({"url": url, "size": path.stat().st_size})
    report["timings"]["stage_in"] = round(time.monotonic() - started, 3)

    if code == 0:
        started = time.monotonic()
        env = {**os.environ, "PYTHONPATH": str(SW), "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            proc = subprocess.run(
                [os.environ.get("RAWFLOW_PAYLOAD_PYTHON") or sys.executable, "-m", "rawflow.payloads", payload, *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=PAYLOAD_TIMEOUT,
            )
            code, stdout = proc.returncode, proc.stdout
            if proc.stderr:
                errors.append(proc.stderr.rstrip("\n"))
        except subprocess.TimeoutExpired:
            code = WRAPPER_ERROR
            errors.append(f"payload {payload!r} timed out after {PAYLOAD_TIMEOUT} s")
        report["timings"]["payload"] = round(time.monotonic() - started, 3)
        report["exit_code"] = code
        try:
            report["payload_report"] = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else None
        except ValueError:
            report["payload_report"] = None

    if code == 0:
        started = time.monotonic()
        for url, path in outputs:
            if not path.is_file():
                errors.append(f"payload wrote no {path.name!r}")
                code = WRAPPER_ERROR
                break
            size, adler = path.stat().st_size, adler32_of(path)
            # --cksum adler32:<value>: xrdcp asks the destination for its checksum and fails on a mismatch.
            result = xrdcp(str(path), url, "-f", "--cksum", f"adler32:{adler}")
            if result.returncode != 0:
                errors.append(f"stage-out to {url!r} failed: {result.stderr.strip()[-500:]}")
                code = STAGE_OUT_FAILED
                break
            report["outputs"].append(
                {
                    "url": url,
                    "size": size,
                    "adler32": adler,
                    "events": events_of(report.get("payload_report"), path.name),
                }
            )
        report["timings"]["stage_out"] = round(time.monotonic() - started, 3)
    report["exit_code"] = code
    # The scratch dir is not a sandbox to bring back: data left only over xrootd.
    for sub in ("in", "out"):
        shutil.rmtree(work / sub, ignore_errors=True)

    stderr = "\n".join(errors)
    if stderr:
        print(stderr, file=sys.stderr)
    record(
        {
            "RawflowReport": json.dumps(report, ensure_ascii=True, separators=(",", ":")),
            "RawflowStdout": tail(stdout),
            "RawflowStderr": tail(stderr),
        }
    )
    return code


def main() -> None:
    try:
        code = run(sys.argv[1:])
    except Exception as exc:
        message = f"rawflow-job: {type(exc).__name__}: {exc}"
        print(message, file=sys.stderr)
        record({"RawflowStderr": tail(message)})
        code = WRAPPER_ERROR
    sys.exit(code)


if __name__ == "__main__":
    main()
