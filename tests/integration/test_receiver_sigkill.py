"""Crash safety: a receiver process (``python -m rawflow.receiver``) SIGKILLed at random points during a
10,000-message stream and restarted until drained → every file registered exactly once, nothing quarantined.

Offsets are committed only after the catalogue commit, so each kill replays at most the batch in flight;
registration is idempotent, so the replay adds nothing twice. The Tier-0 check runs for every message.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from rawflow.grid.process import pid_alive, stop_group
from rawflow.grid.xrootd import LocalSites
from rawflow.naming import DataType, block_id_for
from tests.fixtures.kafka import TEST_SESSION_TIMEOUT_MS, ReceiverRig

MESSAGES = int(os.environ.get("RAWFLOW_TEST_SIGKILL_MESSAGES", "10000"))
KILLS = 4


def receiver_log(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def start_receiver(rig: ReceiverRig, sites_file: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "rawflow.receiver",
        "--bootstrap",
        rig.settings.bootstrap,
        "--group",
        rig.settings.group_id,
        "--catalogue-url",
        rig.catalogue_url,
        "--sites",
        str(sites_file),
        "--topic-prefix",
        rig.topics.raw_announce.removesuffix("rawflow.raw.announce"),
        "--storage-check",
        "full",
        "--storage-parallel",
        "2",
        "--batch-size",
        "500",
        "--session-timeout-ms",
        str(TEST_SESSION_TIMEOUT_MS),
    ]
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    receiver_rig: ReceiverRig, local_sites: LocalSites, tmp_path: Path
) -> None:
    rig = receiver_rig
    files = rig.announcer.make_files(MESSAGES, day=rig.day, run=rig.run, sizes=(64, 256))
    started = time.monotonic()
    rig.announcer.write(files, parallel=16)
    write_seconds = time.monotonic() - started
    rig.announcer.announce(files)
    # Some repeats in the stream as well: they must stay duplicates across crashes.
    rig.announcer.announce(files[:50])

    sites_file = tmp_path / "sites.yaml"
    sites_file.write_text(yaml.safe_dump(rig.sites.to_raw()))
    env = {**os.environ, **local_sites.client_env, "PYTHONPATH": os.pathsep.join(sys.path)}
    log = tmp_path / "receiver.log"
    block_id = block_id_for(rig.day)

    def registered() -> int:
        return len(rig.catalogue.query_files(Block=block_id, Type=DataType.RAW.value))

    rng = random.Random()
    kills = 0
    proc = start_receiver(rig, sites_file, log, env)
    deadline = time.monotonic() + 240
    try:
        while registered() < MESSAGES and time.monotonic() < deadline:
            assert proc.poll() is None, f"receiver exited by itself: {receiver_log(log)}"
            if kills < KILLS:
                before = registered()
                while registered() == before and time.monotonic() < deadline:
                    assert proc.poll() is None, f"receiver exited by itself: {receiver_log(log)}"
                    time.sleep(0.05)  # wait until this incarnation is registering, then kill mid-stream
                time.sleep(rng.uniform(0, 0.5))
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                kills += 1
                proc = start_receiver(rig, sites_file, log, env)
            else:
                time.sleep(0.2)
        assert registered() == MESSAGES, f"{registered()} of {MESSAGES} registered; log: {receiver_log(log)}"
    finally:
        if proc.poll() is None:
            stop_group(proc.pid)
    assert not pid_alive(proc.pid)
    assert kills == KILLS

    records = rig.catalogue.get_files([f.lfn for f in files])
    assert len(records) == MESSAGES
    assert all(records[f.lfn].adler32 == f.adler32 and records[f.lfn].size == f.size for f in files)
    replicas = rig.catalogue.replica_states(block=(DataType.RAW, block_id))
    assert all(list(states) == [rig.sites.tier0.name] for states in replicas.values())
    assert rig.quarantine.count_by_reason() == {}
    print(f"{MESSAGES} files written in {write_seconds:.1f} s; drained with {kills} SIGKILLs in "
          f"{time.monotonic() - started - write_seconds:.1f} s")  # fmt: skip
