"""Reconciliation: files sitting in a block's Tier-0 directory whose announcements were lost are found,
checked with the size and adler32 the storage element reports, and registered; bad ones are quarantined."""

from __future__ import annotations

from rawflow.checks import Limits
from rawflow.messages import Reason
from rawflow.naming import DataType, block_directory_lfn, block_id_for
from rawflow.receiver import Reconciler
from tests.fixtures.kafka import ReceiverRig


def test_reconcile_recovers_unannounced_files(receiver_rig: ReceiverRig) -> None:
    rig = receiver_rig
    block_id = block_id_for(rig.day)
    files = rig.announcer.make_files(12, day=rig.day, run=rig.run, sizes=(100, 1000))
    rig.announcer.write(files)
    rig.announcer.announce(files[:5])  # the other 7 announcements were "lost" (e.g. the broker restarted empty)
    assert rig.drain_until(rig.receiver(), lambda r: r.messages >= 5).accepted == 5

    directory = rig.sites.tier0.pfn(block_directory_lfn(DataType.RAW, block_id))
    empty = files[0].file_name.replace("Daq.", "Empty.", 1)
    rig.storage.put_bytes(f"{directory}/{empty}", b"")
    rig.storage.put_bytes(f"{directory}/notes.txt", b"not a raw file")
    rig.storage.put_bytes(f"{directory}/.{files[0].file_name}.part", b"still arriving")
    big = files[0].file_name.replace("Daq.", "Big.", 1)
    rig.storage.put_bytes(f"{directory}/{big}", b"x" * 2000)

    reconciler = Reconciler(
        rig.catalogue, rig.storage, rig.sites, rig.quarantine, rig.notifier, Limits(max_file_size=1500)
    )
    report = reconciler.reconcile_block(DataType.RAW, block_id)
    assert report.listed == 16
    assert report.skipped == 1  # the in-flight dot-file
    assert report.already_registered == 5
    assert report.recovered == 7
    assert sorted(report.recovered_lfns) == sorted(f.lfn for f in files[5:])
    assert report.rejected == 3
    assert report.rejected_by_reason == {"zero_size": 1, "bad_name": 1, "too_large": 1}

    registered = {r.lfn: r for r in rig.catalogue.files_in_block(DataType.RAW, block_id)}
    assert sorted(registered) == sorted(f.lfn for f in files)
    assert all(registered[f.lfn].adler32 == f.adler32 and registered[f.lfn].size == f.size for f in files)
    rows = rig.quarantine.list()
    assert {(r.reason, r.lfn.rsplit("/", 1)[1] if r.lfn else None) for r in rows} == {
        (Reason.ZERO_SIZE.value, empty),
        (Reason.BAD_NAME.value, "notes.txt"),
        (Reason.TOO_LARGE.value, big),
    }
    assert all(r.topic == f"reconcile:RAW-{block_id}" for r in rows)

    again = reconciler.reconcile_block(DataType.RAW, block_id)
    assert (again.recovered, again.already_registered, again.rejected) == (0, 12, 3)
    assert len(rig.quarantine.list()) == 3  # not quarantined twice


def test_reconcile_of_a_block_with_no_directory(receiver_rig: ReceiverRig) -> None:
    rig = receiver_rig
    reconciler = Reconciler(rig.catalogue, rig.storage, rig.sites, rig.quarantine, rig.notifier)
    report = reconciler.reconcile_block(DataType.RTRAW, block_id_for(rig.day))
    assert (report.listed, report.recovered, report.rejected) == (0, 0, 0)
