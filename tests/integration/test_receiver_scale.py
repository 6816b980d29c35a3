"""Receiver scale-out: two receiver processes (``python -m rawflow.receiver``) in one consumer group drain a
4-partition announcement topic on a real Kafka-protocol broker (Tansu) — 10,000 good announcements plus
duplicates and hostile messages — and one of them is SIGKILLed mid-stream.

The group hands the dead member's partitions to the survivor, which resumes each from its committed offset.
Must hold: every good file registered exactly once (the catalogue's count, the block's counter, one Tier-0
replica each, no file ever reported "accepted" twice), every hostile message quarantined once, and at every
moment a committed offset only covers files already in the catalogue (offsets follow the catalogue commit).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from rawflow.announcer import Announcer
from rawflow.catalogue import get_catalogue
from rawflow.grid.broker import Broker
from rawflow.grid.process import pid_alive, stop_group
from rawflow.grid.xrootd import LocalSites
from rawflow.kafka import Topics, admin_config, consumer_config, ensure_topics, producer_config
from rawflow.naming import DataType, block_id_for
from rawflow.quarantine import Quarantine
from rawflow.storage.base import Storage
from tests.fixtures.kafka import TEST_SESSION_TIMEOUT_MS, make_kafka_settings, read_topic

MESSAGES = int(os.environ.get("RAWFLOW_TEST_SCALE_MESSAGES", "10000"))
PARTITIONS = 4
MEMBERS = ("r1", "r2")
ASSIGNED = re.compile(r"member (\S+) assigned (.*)$")


def _assigned(log: Path) -> list[set[str]]:
    """Every assignment a member logged, in order (each a set of ``topic[partition]``)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        match = ASSIGNED.search(line)
        if match:
            found.append(set() if match.group(2) == "(none)" else set(match.group(2).split()))
    return found


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def test_two_receivers_four_partitions_one_sigkilled_every_file_registered_once(
    kafka_broker: Broker, pg_database: str, storage: Storage, local_sites: LocalSites, tmp_path: Path
) -> None:
    started = time.monotonic()
    settings = make_kafka_settings(kafka_broker.bootstrap, partitions=PARTITIONS)
    prefix = f"t{uuid.uuid4().hex[:8]}."
    topics = Topics().with_prefix(prefix)
    ensure_topics(settings, topics)
    described = AdminClient(admin_config(settings)).list_topics(topics.raw_announce, timeout=10)
    assert len(described.topics[topics.raw_announce].partitions) == PARTITIONS

    sites = local_sites.sites_config
    catalogue = get_catalogue(pg_database)
    quarantine = Quarantine(pg_database)
    quarantine.create_schema()
    producer = Producer(producer_config(settings))
    announcer = Announcer(storage, sites.tier0, producer, topics)
    rng = random.Random()
    day = date(2030, 1, 1) + timedelta(days=rng.randrange(25000))
    files = announcer.make_files(MESSAGES, day=day, run=rng.randrange(1, 999999), sizes=(64, 256))
    announcer.write(files, parallel=16)
    hostile = announcer.hostile(files[0], other=files[1])
    by_payload = {f.payload(): f.lfn for f in files}
    block_id = block_id_for(day)

    sites_file = tmp_path / "sites.yaml"
    sites_file.write_text(yaml.safe_dump(sites.to_raw()))
    env = {**os.environ, **local_sites.client_env, "PYTHONPATH": os.pathsep.join(sys.path)}
    logs = {name: tmp_path / f"receiver-{name}.log" for name in MEMBERS}

    def start(name: str) -> subprocess.Popen[bytes]:
        argv = [
            sys.executable,
            "-m",
            "rawflow.receiver",
            *("--bootstrap", settings.bootstrap, "--group", settings.group_id, "--member", name),
            *("--catalogue-url", pg_database, "--sites", str(sites_file), "--topic-prefix", prefix),
            *("--partitions", str(PARTITIONS), "--storage-check", "full", "--storage-parallel", "2"),
            *("--batch-size", "250", "--session-timeout-ms", str(TEST_SESSION_TIMEOUT_MS)),
        ]
        with open(logs[name], "ab") as out:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def registered() -> int:
        return len(catalogue.query_files(Block=block_id, Type=DataType.RAW.value))

    procs = {name: start(name) for name in MEMBERS}
    raw_partitions = {f"{topics.raw_announce}[{p}]" for p in range(PARTITIONS)}
    try:
        # Both members in the group, each owning a share of the raw topic's partitions, before anything is sent.
        deadline = time.monotonic() + 60
        while True:
            latest = {name: (_assigned(logs[name]) or [set()])[-1] for name in MEMBERS}
            shares = {name: owned & raw_partitions for name, owned in latest.items()}
            if all(shares.values()) and set().union(*shares.values()) == raw_partitions:
                break
            for name, proc in procs.items():
                assert proc.poll() is None, f"{name} exited: {_tail(logs[name])}"
            assert time.monotonic() < deadline, f"group never split the partitions: {latest}"
            time.sleep(0.2)
        assert not shares["r1"] & shares["r2"], shares

        half = MESSAGES // 2
        announcer.announce(files[:half])
        announcer.publish(hostile)
        announcer.announce(files[half:])
        announcer.announce(files[:50])  # repeats: they must stay duplicates across the crash
        announced_at = time.monotonic()

        # Where each good announcement landed, for checking committed offsets against the catalogue.
        on_raw = MESSAGES + 50 + sum(m.topic == topics.raw_announce for m in hostile)
        stream = read_topic(settings, topics.raw_announce, expected=on_raw, timeout=60)
        assert len(stream) == on_raw
        lfn_at: dict[tuple[int, int], str] = {}
        for msg in stream:
            lfn = by_payload.get(msg.value())  # type: ignore[attr-defined]
            if lfn is not None:
                lfn_at[(msg.partition(), msg.offset())] = lfn  # type: ignore[attr-defined]
        assert len(set(lfn_at.values())) == MESSAGES
        assert {p for p, _ in lfn_at} == set(range(PARTITIONS))  # the keys spread over every partition

        watcher = Consumer(consumer_config(settings))  # reads the group's commits; never joins the group
        wanted = [TopicPartition(topics.raw_announce, p) for p in range(PARTITIONS)]
        violations: list[str] = []
        checks = 0
        stop = threading.Event()

        def check_commits() -> None:
            nonlocal checks
            while not stop.is_set():
                committed = {tp.partition: tp.offset for tp in watcher.committed(wanted, timeout=10)}
                # Read after the offsets: anything a commit covers must already be in the catalogue.
                covered = [lfn for (p, o), lfn in lfn_at.items() if o < committed.get(p, -1)]
                have = catalogue.get_files(covered) if covered else {}
                missing = [lfn for lfn in covered if lfn not in have]
                if missing:
                    violations.append(f"{len(missing)} committed but unregistered, e.g. {missing[0]} ({committed})")
                checks += 1
                stop.wait(0.5)

        checker = threading.Thread(target=check_commits, name="commit-checker", daemon=True)
        checker.start()

        # Kill r2 while both are registering: after it logged a batch, at a random point of the stream.
        victim, survivor = "r2", "r1"
        deadline = time.monotonic() + 60
        while not ("messages in" in logs[victim].read_text(errors="replace") and registered() >= MESSAGES // 10):
            assert procs[victim].poll() is None, f"{victim} exited: {_tail(logs[victim])}"
            assert time.monotonic() < deadline, f"{victim} never processed a batch: {_tail(logs[victim])}"
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.5))
        at_kill = registered()
        os.kill(procs[victim].pid, signal.SIGKILL)
        procs[victim].wait(10)
        assert at_kill < MESSAGES, "the stream was drained before the kill: nothing was left to take over"

        deadline = time.monotonic() + 90
        while registered() < MESSAGES and time.monotonic() < deadline:
            assert procs[survivor].poll() is None, f"{survivor} exited: {_tail(logs[survivor])}"
            time.sleep(0.2)
        assert registered() == MESSAGES, f"{registered()} of {MESSAGES}; {survivor}: {_tail(logs[survivor])}"
        drained_at = time.monotonic()

        # The survivor took the dead member's partitions over and committed every one to the end.
        assert raw_partitions <= _assigned(logs[survivor])[-1]
        ends: dict[int, int] = {}
        for msg in stream:
            partition, offset = msg.partition(), msg.offset()  # type: ignore[attr-defined]
            ends[partition] = max(ends.get(partition, 0), offset + 1)
        deadline = time.monotonic() + 30
        while {tp.partition: tp.offset for tp in watcher.committed(wanted, timeout=10)} != ends:
            assert time.monotonic() < deadline, f"offsets not committed to the end {ends}"
            time.sleep(0.2)
        stop.set()
        checker.join(30)
        watcher.close()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                stop_group(proc.pid)
        producer.flush(10)
    assert not any(pid_alive(proc.pid) for proc in procs.values())
    assert not violations, violations[:5]
    assert checks >= 3

    records = catalogue.get_files([f.lfn for f in files])
    assert len(records) == MESSAGES
    assert all(records[f.lfn].adler32 == f.adler32 and records[f.lfn].size == f.size for f in files)
    block = catalogue.get_block(DataType.RAW, block_id)
    assert block is not None and block.files == MESSAGES  # the block's counter: nothing counted twice
    replicas = catalogue.replica_states(block=(DataType.RAW, block_id))
    assert len(replicas) == MESSAGES and all(list(s) == [sites.tier0.name] for s in replicas.values())
    # Each member's answers on the status topic: no file was ever accepted twice.
    statuses = [json.loads(m.value()) for m in read_topic(settings, topics.status, expected=10**9, timeout=5)]  # type: ignore[attr-defined]
    accepted = Counter(s["lfn"] for s in statuses if s["status"] == "accepted")
    assert accepted and max(accepted.values()) == 1
    assert set(accepted) <= {f.lfn for f in files}
    # Every hostile message quarantined once, even those the victim had read before it died.
    expected_reasons = Counter(m.expected.value for m in hostile)
    assert quarantine.count_by_reason() == dict(expected_reasons)
    catalogue.close()
    quarantine.engine.dispose()
    print(
        f"{MESSAGES} files: two members, {victim} SIGKILLed at {at_kill} registered; drained "
        f"{drained_at - announced_at:.1f} s after announcing ({time.monotonic() - started:.1f} s in all); "
        f"{checks} commit checks"
    )
