"""Operations units on real middleware (xrootd sites through gfal2, Tansu, PostgreSQL): which blocks the scheduled
reconciliation looks at, and the destination audit (dark, lost by absence, lost by size, results stored)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import yaml

from rawflow.catalogue.base import ReplicaState
from rawflow.naming import DataType, block_directory_lfn, block_id_for, block_name
from rawflow.ops.audit import AuditStore, audit_block, audit_site
from rawflow.ops.reconcile import Reconciler, blocks_to_reconcile, reconcile_blocks
from tests.fixtures.kafka import ReceiverRig

REPO = Path(__file__).resolve().parents[2]


def _reconciler(rig: ReceiverRig) -> Reconciler:
    return Reconciler(rig.catalogue, rig.storage, rig.sites, rig.quarantine, rig.notifier)


def test_scheduled_reconciliation_covers_open_blocks_and_the_latest_days_not_closed_ones(
    receiver_rig: ReceiverRig,
) -> None:
    rig = receiver_rig
    today, block_id = rig.day, block_id_for(rig.day)
    files = rig.announcer.make_files(6, day=today, run=rig.run, sizes=(100, 1000))
    rig.announcer.write(files)  # on the Tier-0, never announced: the day's block does not exist yet
    wanted = blocks_to_reconcile(rig.catalogue, today=today)
    assert (DataType.RAW, block_id) in wanted and (DataType.RTRAW, block_id) in wanted

    run = reconcile_blocks(_reconciler(rig), wanted)
    assert run.failed == {}
    assert {r.block: r.recovered for r in run.reports}[block_name(DataType.RAW, block_id)] == 6
    assert run.to_dict()["recovered"] >= 6

    # The block is open now: it stays on the list days later, until it is closed.
    later = today + timedelta(days=30)
    assert (DataType.RAW, block_id) in blocks_to_reconcile(rig.catalogue, today=later)
    assert rig.catalogue.close_block(DataType.RAW, block_id)
    assert (DataType.RAW, block_id) not in blocks_to_reconcile(rig.catalogue, today=later)
    assert (DataType.RAW, block_id) not in blocks_to_reconcile(rig.catalogue, today=today)

    # A closed block offered again (e.g. listed just before it closed) is reported, not an error.
    again = reconcile_blocks(_reconciler(rig), [(DataType.RAW, block_id)])
    assert again.failed == {} and [r.recovered for r in again.reports] == [0]


def test_audit_finds_dark_and_lost_replicas_marks_lost_bad_and_stores_the_result(receiver_rig: ReceiverRig) -> None:
    rig = receiver_rig
    block_id = block_id_for(rig.day)
    site = rig.sites["JINR-EOS"]
    files = rig.announcer.make_files(5, day=rig.day, run=rig.run, sizes=(100, 1000))
    rig.announcer.write(files)
    assert _reconciler(rig).reconcile_block(DataType.RAW, block_id).recovered == 5
    for f in files:
        rig.storage.put_bytes(site.pfn(f.lfn), f.content)
    rig.catalogue.set_replica_state([f.lfn for f in files], site.name, ReplicaState.VALIDATED)

    clean = audit_site(rig.catalogue, rig.storage, rig.sites, DataType.RAW, block_id, site.name)
    assert clean.consistent and (clean.listed, clean.expected, clean.good) == (5, 5, 5)

    gone, shrunk = files[0], files[1]
    rig.storage.unlink(site.pfn(gone.lfn))
    rig.storage.put_bytes(site.pfn(shrunk.lfn), shrunk.content[:10])
    directory = block_directory_lfn(DataType.RAW, block_id)
    stray = f"{directory}/stray-file.dat"
    rig.storage.put_bytes(site.pfn(stray), b"nobody knows me")
    rig.storage.put_bytes(site.pfn(f"{directory}/.{files[2].file_name}.part"), b"in flight")

    audit = audit_site(rig.catalogue, rig.storage, rig.sites, DataType.RAW, block_id, site.name)
    assert audit.dark == [stray]
    assert sorted(audit.lost) == sorted([gone.lfn, shrunk.lfn])
    assert audit.lost[gone.lfn].startswith(f"lost: not on {site.name}")
    assert audit.lost[shrunk.lfn] == f"lost: 10 bytes at {site.name}, the catalogue has {shrunk.size}"
    assert audit.marked_bad == 2 and not audit.consistent
    states = rig.catalogue.replica_states([f.lfn for f in files], site=site.name)
    assert {lfn: s[site.name].state for lfn, s in states.items()} == {
        **{f.lfn: ReplicaState.VALIDATED for f in files[2:]},
        gone.lfn: ReplicaState.BAD,
        shrunk.lfn: ReplicaState.BAD,
    }
    assert (states[gone.lfn][site.name].error or "").startswith("lost:")
    assert rig.storage.exists(site.pfn(stray))  # dark files are listed, never deleted

    # A second audit: the lost replicas are BAD now (no longer "good"), so nothing is marked twice.
    again = audit_site(rig.catalogue, rig.storage, rig.sites, DataType.RAW, block_id, site.name)
    assert (again.lost, again.marked_bad, again.dark, again.good) == ({}, 0, [stray], 3)

    # Sites that never got the block: nothing listed, every good replica there would be lost (none are).
    others = audit_block(rig.catalogue, rig.storage, rig.sites, DataType.RAW, block_id, ["IN2P3-DCACHE"])
    assert others[0].listed == 0 and others[0].consistent

    store = AuditStore(rig.catalogue_url)
    try:
        store.save([audit, *others])
        store.save([audit])  # the latest audit replaces the previous one of the same block × site
        latest = store.latest(block_name(DataType.RAW, block_id))
    finally:
        store.close()
    assert set(latest) == {site.name, "IN2P3-DCACHE"}
    assert latest[site.name]["dark"] == [stray] and latest[site.name]["lost_count"] == 2
    assert latest[site.name]["lost"][shrunk.lfn].startswith("lost: 10 bytes")


def test_cli_block_reconcile_registers_lost_files_and_says_so(
    receiver_rig: ReceiverRig, storage_token: str, tmp_path: Path
) -> None:
    rig = receiver_rig
    block_id = block_id_for(rig.day)
    files = rig.announcer.make_files(3, day=rig.day, run=rig.run, sizes=(100, 1000))
    rig.announcer.write(files)
    sites_file = tmp_path / "sites.yaml"
    sites_file.write_text(yaml.safe_dump(rig.sites.to_raw(), sort_keys=False))
    env = {
        **os.environ,
        "RAWFLOW_VAR": str(tmp_path / "no-grid"),
        "RAWFLOW_CATALOGUE_URL": rig.catalogue_url,
        "RAWFLOW_SITES": str(sites_file),
        "RAWFLOW_STORAGE_TOKEN": storage_token,
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rawflow.cli", "block", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=REPO,
        )

    first = cli("reconcile", block_id, "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["recovered"] == 3 and sorted(report["recovered_lfns"]) == sorted(f.lfn for f in files)
    again = cli("reconcile", block_id)
    assert again.returncode == 0, again.stderr
    assert f"RAW-{block_id}: 3 listed at the Tier-0, 3 already registered, 0 recovered" in again.stdout

    rig.catalogue.close_block(DataType.RAW, block_id)
    rig.announcer.write(rig.announcer.make_files(1, day=rig.day, run=rig.run + 1, sizes=(100, 100)))
    closed = cli("reconcile", block_id)
    assert closed.returncode == 2 and closed.stderr.strip().count("\n") == 0, closed.stderr
    assert "is closed" in closed.stderr
    bad = cli("reconcile", "2025-11-01")
    assert bad.returncode == 2 and "expected YYYYMMDD" in bad.stderr
