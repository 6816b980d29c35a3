"""The DataReceiver against the real broker, catalogue (Postgres) and Tier-0 (xrootd via gfal2):
good and hostile announcements → each good file registered exactly once, every bad one quarantined with
its reason, dead-lettered with its original bytes, answered on the status topic; the receiver keeps going."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter

from rawflow.messages import HEADER_REASON, HEADER_SHA256, Reason
from rawflow.naming import DataType, block_id_for, block_name
from rawflow.quarantine import QuarantineStatus
from rawflow.receiver import DrainReport
from tests.fixtures.kafka import ReceiverRig, read_topic


def test_good_and_hostile_messages(receiver_rig: ReceiverRig) -> None:
    rig = receiver_rig
    files = rig.announcer.make_files(20, day=rig.day, run=rig.run)
    rig.announcer.write(files)
    hostile = rig.announcer.hostile(files[0], other=files[1])
    assert {h.expected for h in hostile} >= {
        Reason.BAD_JSON,
        Reason.MISSING_FIELD,
        Reason.ZERO_SIZE,
        Reason.TOO_LARGE,
        Reason.BAD_PATH,
        Reason.CHECKSUM_MISMATCH,
        Reason.UNKNOWN_TYPE,
        Reason.MESSAGE_TOO_LARGE,
        Reason.ABSENT_AT_TIER0,
    }
    rig.announcer.announce(files)
    rig.announcer.publish(hostile)
    rig.announcer.announce(files[2:5])  # the online side repeats itself: duplicates, not errors
    total = len(files) + len(hostile) + 3

    receiver = rig.receiver()
    seen = DrainReport()
    stop = threading.Event()
    worker = threading.Thread(target=receiver.run_forever, args=(stop,), kwargs={"on_report": seen.merge})
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while seen.messages < total and time.monotonic() < deadline:
            time.sleep(0.2)
        assert seen.messages == total

        block_id = block_id_for(rig.day)
        registered = {f.lfn: f for f in rig.catalogue.files_in_block(DataType.RAW, block_id)}
        assert sorted(registered) == sorted(f.lfn for f in files)
        assert all(registered[f.lfn].adler32 == f.adler32 and registered[f.lfn].size == f.size for f in files)
        assert seen.accepted == 20 and seen.duplicates == 3
        assert sorted(seen.registered_lfns_by_block[block_name(DataType.RAW, block_id)]) == sorted(registered)

        expected = Counter(h.expected.value for h in hostile)
        assert seen.rejected_by_reason == expected
        assert rig.quarantine.count_by_reason() == expected
        rows = rig.quarantine.list(limit=1000)
        assert len(rows) == len(hostile) and all(r.status is QuarantineStatus.QUARANTINED for r in rows)
        big = next(r for r in rows if r.reason == Reason.MESSAGE_TOO_LARGE.value)
        big_bytes = next(h.value for h in hostile if h.expected is Reason.MESSAGE_TOO_LARGE)
        assert big.truncated and big.payload_size == len(big_bytes) and len(big.payload) < len(big_bytes)
        assert big.payload_sha256 == hashlib.sha256(big_bytes).hexdigest()
        bad_json = [r for r in rows if r.reason == Reason.BAD_JSON.value]
        assert {r.payload for r in bad_json} == {h.value for h in hostile if h.expected is Reason.BAD_JSON}
        mismatch = next(r for r in rows if r.reason == Reason.CHECKSUM_MISMATCH.value)
        assert mismatch.lfn == files[1].lfn and files[1].adler32 in mismatch.reason_text

        dead = read_topic(rig.settings, rig.topics.deadletter, expected=len(hostile))
        assert len(dead) == len(hostile)
        by_reason = Counter(dict(m.headers())[HEADER_REASON].decode() for m in dead)  # type: ignore[attr-defined]
        assert by_reason == expected
        for m in dead:
            headers = dict(m.headers())  # type: ignore[attr-defined]
            assert headers[HEADER_SHA256].decode() == hashlib.sha256(m.value()).hexdigest()  # type: ignore[attr-defined]

        statuses = read_topic(rig.settings, rig.topics.status, expected=total)
        outcomes = Counter(json.loads(m.value())["status"] for m in statuses)  # type: ignore[attr-defined]
        assert outcomes == {"accepted": 20, "duplicate": 3, "rejected": len(hostile)}

        # Critical problems (the checksum and size mismatches at the Tier-0) reached the operator.
        assert rig.notifier.sent and any("checksum_mismatch" in body for _, body in rig.notifier.sent)

        # Still running: a file announced now is registered too.
        late = rig.announcer.make_files(1, day=rig.day, run=rig.run, first_sequence=500)
        rig.announcer.write(late)
        rig.announcer.announce(late)
        deadline = time.monotonic() + 30
        while rig.catalogue.get_file(late[0].lfn) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rig.catalogue.get_file(late[0].lfn) is not None
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()


def test_conflict_with_a_registered_file_is_quarantined_and_notified(receiver_rig: ReceiverRig) -> None:
    rig = receiver_rig
    files = rig.announcer.make_files(3, day=rig.day, run=rig.run)
    rig.announcer.write(files)
    rig.announcer.announce(files)
    receiver = rig.receiver()
    first = rig.drain_until(receiver, lambda r: r.messages >= 3)
    assert first.accepted == 3

    # The online side rewrites a file in place and announces it again: the Tier-0 agrees with the new
    # message, but the catalogue already holds the old checksum. Never overwritten: a conflict.
    rewritten = rig.announcer.make_files(1, day=rig.day, run=rig.run, sizes=(5000, 5000))[0]
    assert rewritten.lfn == files[0].lfn and rewritten.adler32 != files[0].adler32
    rig.announcer.write([rewritten])
    rig.announcer.announce([rewritten, files[1]])
    second = rig.drain_until(receiver, lambda r: r.messages >= 2)
    assert second.rejected_by_reason == {Reason.CONFLICT.value: 1} and second.duplicates == 1
    record = rig.catalogue.get_file(files[0].lfn)
    assert record is not None and record.adler32 == files[0].adler32
    [row] = rig.quarantine.list(reason=Reason.CONFLICT)
    assert row.lfn == files[0].lfn and files[0].adler32 in row.reason_text and rewritten.adler32 in row.reason_text
    assert second.notifications == 1 and "conflict" in rig.notifier.sent[-1][1]


def test_duplicates_and_conflicts_inside_one_batch(receiver_rig: ReceiverRig) -> None:
    rig = receiver_rig
    [f] = rig.announcer.make_files(1, day=rig.day, run=rig.run)
    rig.announcer.write([f])
    # Same LFN three times in one batch: twice the true file, once a different size and checksum that the
    # Tier-0 contradicts; all on one partition (same key) so they arrive in this order.
    rig.announcer.announce([f, f])
    rig.producer.produce(rig.topics.raw_announce, value=f.payload(Checksum="00000001"), key=f.file_name.encode())
    rig.producer.flush(10)
    report = rig.drain_until(rig.receiver(), lambda r: r.messages >= 3)
    assert report.accepted == 1 and report.duplicates == 1
    assert report.rejected_by_reason == {Reason.CHECKSUM_MISMATCH.value: 1}
    assert [r.lfn for r in rig.catalogue.files_in_block(DataType.RAW, block_id_for(rig.day))] == [f.lfn]
