"""JUNO's day boundary through the real broker (Tansu), Tier-0 (xrootd via gfal2) and catalogue (Postgres).

With the receiving day in Asia/Shanghai, files started either side of Beijing midnight (15:59:59Z and 16:00:00Z,
filed by the DAQ under their Beijing days) land in the blocks of those days. A file filed by UTC day (16:00:02Z
under the earlier directory) is quarantined as ``day_mismatch`` with both days named, by the DataReceiver and by
the reconciliation alike, and never registered. The view's data layer, the CLI and the block timetable, reading
the same catalogue with the same zone, show the files in the same blocks.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
import yaml

from rawflow.announcer import Announcer, SyntheticFile
from rawflow.catalogue import Catalogue, get_catalogue
from rawflow.cli import block_logical_date
from rawflow.cli import main as cli
from rawflow.messages import Reason
from rawflow.naming import DataType, block_id_for
from rawflow.planning import targets
from rawflow.receiver import Reconciler
from rawflow_airflow.timetables import BlockDayTimetable
from rawflow_airflow.ui import data
from rawflow_airflow.ui.sources import Sources, ViewSettings
from tests.fixtures.kafka import ReceiverRig

ZONE = "Asia/Shanghai"


def directory(f: SyntheticFile) -> str:
    """The ``YYYY/mmdd`` directory a file was filed under."""
    return "/".join(f.lfn.split("/")[3:5])


class RigSources(Sources):
    """The view's sources on the rig's Postgres catalogue (the monitoring tables go into the same database)."""

    def __init__(self, rig: ReceiverRig) -> None:
        super().__init__()
        self.rig = rig
        policy = rig.sites
        self._fixed = ViewSettings(
            db_url=rig.catalogue_url,
            catalogue_is_sql=True,
            kafka_bootstrap=None,
            kafka_group="rawflow-receiver",
            site_order=(policy.tier0.name, *(s.name for s in targets(policy))),
            policy=policy,
        )

    def settings(self) -> ViewSettings:
        return self._fixed

    def catalogue(self) -> Catalogue:
        return get_catalogue(self.rig.catalogue_url)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    code = cli([*argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_files_either_side_of_beijing_midnight_land_in_their_blocks(
    receiver_rig: ReceiverRig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rig = receiver_rig
    rig.sites = replace(rig.sites, timezone=ZONE)  # the site policy's zone: the receiver takes it from there
    midnight = datetime.combine(rig.day, time(16, 0), tzinfo=UTC)  # 00:00 in Beijing on the next day
    before, after = block_id_for(rig.day), block_id_for(rig.day + timedelta(days=1))
    daq = Announcer(rig.storage, rig.sites.tier0, rig.producer, rig.topics, timezone=ZONE)
    files = daq.make_files(4, start=midnight - timedelta(seconds=2), run=rig.run, sizes=(100, 1000))
    assert [f.file_name.split(".")[5][-6:] for f in files] == ["155958", "155959", "160000", "160001"]
    assert [directory(f) for f in files] == [f"{before[:4]}/{before[4:]}"] * 2 + [f"{after[:4]}/{after[4:]}"] * 2
    # A DAQ filing by UTC day puts its 16:00:02Z file under the earlier day: that is 00:00:02 of the next
    # Beijing day.
    utc_daq = Announcer(rig.storage, rig.sites.tier0, rig.producer, rig.topics)
    [misfiled] = utc_daq.make_files(1, start=midnight + timedelta(seconds=2), run=rig.run, sizes=(100, 1000))
    assert directory(misfiled) == directory(files[0])
    daq.write([*files, misfiled])
    daq.announce([*files, misfiled])

    receiver = rig.receiver()
    assert receiver.limits.timezone == ZONE
    report = rig.drain_until(receiver, lambda r: r.messages >= 5)
    assert report.messages == 5 and report.accepted == 4
    assert report.rejected_by_reason == {Reason.DAY_MISMATCH.value: 1}
    assert report.blocks_seen == {f"RAW-{before}", f"RAW-{after}"}

    def in_block(block_id: str) -> list[str]:
        return sorted(r.lfn for r in rig.catalogue.files_in_block(DataType.RAW, block_id))

    assert in_block(before) == sorted(f.lfn for f in files[:2])
    assert in_block(after) == sorted(f.lfn for f in files[2:])
    assert rig.catalogue.get_file(misfiled.lfn) is None
    [row] = rig.quarantine.list(reason=Reason.DAY_MISMATCH)
    assert row.lfn == misfiled.lfn
    assert f"receiving day {after}, but the file is in the {before[:4]}/{before[4:]} directory" in row.reason_text
    assert f"in {ZONE}" in row.reason_text
    # A critical reason: the operator hears of it at once.
    assert any("day_mismatch" in body and misfiled.lfn in body for _, body in rig.notifier.sent)

    # The reconciliation checks the same way: of the files in the earlier directory no announcement brought, the
    # DAQ's own is registered, the UTC-filed ones are quarantined (again, under the reconciliation's topic).
    [lost] = daq.make_files(1, start=midnight - timedelta(seconds=3), run=rig.run, sizes=(100, 1000))
    [misfiled_too] = utc_daq.make_files(1, start=midnight + timedelta(seconds=3), run=rig.run, sizes=(100, 1000))
    assert directory(lost) == directory(misfiled_too) == directory(files[0])
    daq.write([lost, misfiled_too])
    reconciler = Reconciler(rig.catalogue, rig.storage, rig.sites, rig.quarantine, rig.notifier)
    reconciled = reconciler.reconcile_block(DataType.RAW, before)
    assert reconciled.recovered_lfns == [lost.lfn]
    assert reconciled.rejected_by_reason == {Reason.DAY_MISMATCH.value: 2}
    assert rig.catalogue.get_file(misfiled_too.lfn) is None
    assert {r.lfn for r in rig.quarantine.list(topic=f"reconcile:RAW-{before}")} == {misfiled.lfn, misfiled_too.lfn}
    expected = {before: sorted([*(f.lfn for f in files[:2]), lost.lfn]), after: sorted(f.lfn for f in files[2:])}
    assert {block_id: in_block(block_id) for block_id in expected} == expected

    # The view's data layer on the same catalogue, with Airflow's [rawflow] receiving_day_timezone the same zone.
    monkeypatch.setenv("AIRFLOW__RAWFLOW__RECEIVING_DAY_TIMEZONE", ZONE)
    monkeypatch.setattr(data, "block_runs", lambda data_type, block_ids: {})  # no Airflow database here
    sources = RigSources(rig)
    for block_id, lfns in expected.items():
        view = data.block(sources, f"RAW-{block_id}", problems_only=False, limit=100, offset=0)
        assert (view.block_id, view.total_files) == (block_id, len(lfns))
        assert sorted(f.lfn for f in view.files) == lfns
    # The view's "today" 30 s after Beijing midnight is the later day; in UTC it would still be the earlier one.
    monkeypatch.setattr(data, "utc_now", lambda: midnight + timedelta(seconds=30))
    assert data.matrix(sources, 1, "RAW").first_block_id == after
    monkeypatch.setenv("AIRFLOW__RAWFLOW__RECEIVING_DAY_TIMEZONE", "UTC")
    assert data.matrix(sources, 1, "RAW").first_block_id == before
    monkeypatch.setenv("AIRFLOW__RAWFLOW__RECEIVING_DAY_TIMEZONE", ZONE)

    # The CLI on the same catalogue and policy.
    policy = tmp_path / "sites.yaml"
    policy.write_text(yaml.safe_dump(rig.sites.to_raw()))
    monkeypatch.setenv("RAWFLOW_VAR", str(tmp_path / "no-grid"))
    monkeypatch.setenv("RAWFLOW_SITES", str(policy))
    monkeypatch.setenv("RAWFLOW_CATALOGUE_URL", rig.catalogue_url)
    for block_id, lfns in expected.items():
        status = run_cli(capsys, "block", "status", block_id)
        assert (status["block"], status["files"]) == (f"RAW-{block_id}", len(lfns))
    # A bare file name is looked up in the receiving day of its time stamp in the policy's zone.
    for f, block_id in ((files[1], before), (files[2], after)):
        shown = run_cli(capsys, "file", "show", f.file_name)
        assert (shown["lfn"], shown["block"]) == (f.lfn, f"RAW-{block_id}")
    listed = run_cli(capsys, "quarantine", "list", "--reason", Reason.DAY_MISMATCH.value)
    assert misfiled.lfn in json.dumps(listed) and misfiled_too.lfn in json.dumps(listed)

    # The block DAG's timetable: a manual run the CLI starts for a block is that block's run.
    table = BlockDayTimetable(ZONE)
    for block_id in expected:
        assert table.block_id(pendulum.parse(block_logical_date(block_id, ZONE))) == block_id
    assert table.block_id(pendulum.instance(midnight - timedelta(seconds=1))) == before
    assert table.block_id(pendulum.instance(midnight)) == after
