"""The receiving day's time zone: naming, site policy, the block timetable and the block DAG's task agree; the
DataReceiver's and the reconciliation's check that a file's directory is the receiving day of its FileTime; the
announcer filing files as the DAQ does; the scheduled reconciliation's "today".

Instants one second either side of local midnight, in a DST-free zone (Asia/Shanghai, JUNO's day boundary),
in UTC and in a zone with daylight saving (Europe/Rome: 23 h and 25 h days).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
import yaml

from rawflow.announcer import Announcer
from rawflow.checks import Limits, check_message
from rawflow.errors import ConfigError, InvalidNameError
from rawflow.messages import Reason, Rejection
from rawflow.naming import (
    RawFileName,
    RawFilePath,
    day_mismatch,
    file_receiving_day,
    receiving_day,
    receiving_day_bounds,
)
from rawflow.sites import Site, default_sites_path, load_sites

REPO = Path(__file__).resolve().parents[2]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("instant", "zone", "day"),
    [
        # 23:59:59 and 00:00:00 Beijing time = 15:59:59 and 16:00:00 UTC
        ("2026-11-23T15:59:59", "Asia/Shanghai", "2026-11-23"),
        ("2026-11-23T16:00:00", "Asia/Shanghai", "2026-11-24"),
        ("2026-11-23T15:59:59", "UTC", "2026-11-23"),
        ("2026-11-23T16:00:00", "UTC", "2026-11-23"),
        # 23:59:59 and 00:00:00 UTC: still the same Beijing day (08:00)
        ("2026-11-23T23:59:59", "UTC", "2026-11-23"),
        ("2026-11-24T00:00:00", "UTC", "2026-11-24"),
        ("2026-11-23T23:59:59", "Asia/Shanghai", "2026-11-24"),
        ("2026-11-24T00:00:00", "Asia/Shanghai", "2026-11-24"),
        # Rome in summer is UTC+2, in winter UTC+1
        ("2026-07-01T21:59:59", "Europe/Rome", "2026-07-01"),
        ("2026-07-01T22:00:00", "Europe/Rome", "2026-07-02"),
        ("2026-12-01T22:59:59", "Europe/Rome", "2026-12-01"),
        ("2026-12-01T23:00:00", "Europe/Rome", "2026-12-02"),
    ],
)
def test_receiving_day_either_side_of_local_midnight(instant: str, zone: str, day: str) -> None:
    assert receiving_day(utc(instant), zone).isoformat() == day


def test_naive_instants_are_utc() -> None:
    assert receiving_day(datetime(2026, 11, 23, 16), "Asia/Shanghai").isoformat() == "2026-11-24"


@pytest.mark.parametrize(
    ("block_id", "zone", "start", "hours"),
    [
        ("20261124", "UTC", "2026-11-24T00:00:00", 24),
        ("20261124", "Asia/Shanghai", "2026-11-23T16:00:00", 24),
        ("20260329", "Europe/Rome", "2026-03-28T23:00:00", 23),  # clocks go forward
        ("20261025", "Europe/Rome", "2026-10-24T22:00:00", 25),  # clocks go back
    ],
)
def test_day_bounds(block_id: str, zone: str, start: str, hours: int) -> None:
    first, end = receiving_day_bounds(block_id, zone)
    assert first == utc(start)
    assert end - first == timedelta(hours=hours)
    assert receiving_day(first, zone).strftime("%Y%m%d") == block_id
    assert receiving_day(end - timedelta(seconds=1), zone).strftime("%Y%m%d") == block_id
    assert receiving_day(end, zone).strftime("%Y%m%d") != block_id


def test_unknown_zone_is_a_one_line_error() -> None:
    with pytest.raises(InvalidNameError, match="invalid TimeZone 'Mars/Olympus'"):
        receiving_day(utc("2026-11-23T00:00:00"), "Mars/Olympus")


def test_site_policy_carries_the_zone(tmp_path: Path) -> None:
    assert load_sites(default_sites_path()).timezone == "UTC"
    raw = yaml.safe_load(default_sites_path().read_text())
    raw["timezone"] = "Asia/Shanghai"
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(raw))
    sites = load_sites(good)
    assert sites.timezone == "Asia/Shanghai"
    # The local grid rewrites the policy with its own URL prefixes: the zone survives.
    rewritten = sites.with_url_prefixes({"IHEP-EOS": "root://127.0.0.1:1//eos"})
    assert rewritten.timezone == "Asia/Shanghai" and rewritten.to_raw()["timezone"] == "Asia/Shanghai"
    raw["timezone"] = "Beijing"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_sites(bad)
    assert str(err.value) == (f"{bad}: timezone='Beijing': not an IANA time zone name such as UTC or Asia/Shanghai")


# -- the block DAG's timetable ------------------------------------------------------------------------------


def test_timetable_days_start_at_local_midnight() -> None:
    from airflow.timetables.base import DataInterval, TimeRestriction

    from rawflow_airflow.timetables import BlockDayTimetable

    table = BlockDayTimetable("Asia/Shanghai")
    first = table.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=pendulum.datetime(2026, 11, 23, 12, tz="UTC"), latest=None, catchup=True),
    )
    assert first is not None
    # 2026-11-23 12:00 UTC is 20:00 in Beijing: the next day starting is 11-24, at 11-23 16:00 UTC.
    assert first.run_after == pendulum.datetime(2026, 11, 23, 16, tz="UTC")
    assert first.data_interval.end - first.data_interval.start == timedelta(days=1)
    assert table.block_id(first.data_interval.start) == "20261124"
    following = table.next_dagrun_info(
        last_automated_data_interval=DataInterval(first.data_interval.start, first.data_interval.end),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
    )
    assert following is not None and table.block_id(following.data_interval.start) == "20261125"

    # A manual run at 23:59:59 Beijing time is that day's block, one second later the next day's.
    before = table.infer_manual_data_interval(run_after=pendulum.datetime(2026, 11, 23, 15, 59, 59, tz="UTC"))
    after = table.infer_manual_data_interval(run_after=pendulum.datetime(2026, 11, 23, 16, tz="UTC"))
    assert table.block_id(before.start) == "20261123" and table.block_id(after.start) == "20261124"
    assert table.block_id(pendulum.datetime(2026, 11, 23, 15, 59, 59, tz="UTC")) == "20261123"
    assert table.block_id(pendulum.datetime(2026, 11, 23, 16, tz="UTC")) == "20261124"
    # The block closes two hours after its day ends (Beijing midnight = 16:00 UTC).
    assert table.block_closes_at(before.start) == "2026-11-23T18:00:00+00:00"


def test_timetable_in_utc_and_across_a_dst_change() -> None:
    from rawflow_airflow.timetables import BlockDayTimetable

    utc_table = BlockDayTimetable("UTC")
    assert utc_table.block_id(pendulum.datetime(2026, 11, 23, 23, 59, 59, tz="UTC")) == "20261123"
    assert utc_table.block_id(pendulum.datetime(2026, 11, 24, tz="UTC")) == "20261124"

    rome = BlockDayTimetable("Europe/Rome")
    long_day = rome.infer_manual_data_interval(run_after=pendulum.datetime(2026, 10, 25, 12, tz="UTC"))
    assert long_day.start == pendulum.datetime(2026, 10, 24, 22, tz="UTC")
    assert long_day.end - long_day.start == timedelta(hours=25)
    assert rome.block_id(long_day.start) == "20261025"
    assert rome.block_closes_at(long_day.start) == "2026-10-26T01:00:00+00:00"


def test_timetable_zone_comes_from_airflow_config_and_survives_serialisation(monkeypatch: pytest.MonkeyPatch) -> None:
    from rawflow_airflow.timetables import BlockDayTimetable

    monkeypatch.delenv("AIRFLOW__RAWFLOW__RECEIVING_DAY_TIMEZONE", raising=False)
    assert BlockDayTimetable().timezone_name == "UTC"
    monkeypatch.setenv("AIRFLOW__RAWFLOW__RECEIVING_DAY_TIMEZONE", "Asia/Shanghai")
    table = BlockDayTimetable()
    assert table.timezone_name == "Asia/Shanghai"
    assert "Asia/Shanghai" in table.summary
    again = BlockDayTimetable.deserialize(table.serialize())
    assert again.timezone_name == "Asia/Shanghai"


def test_block_run_fails_fast_when_airflow_and_site_policy_zones_differ() -> None:
    from rawflow_airflow.tasks import block_targets

    path = str(default_sites_path())
    assert block_targets(path, timezone="UTC")[-1] == "IHEP-TAPE"
    with pytest.raises(ConfigError, match="receiving_day_timezone 'Asia/Shanghai'"):
        block_targets(path, timezone="Asia/Shanghai")


# -- the DAQ's file time and directory, and the receiver's check ---------------------------------------------


def daq_path(file_time: str, directory: str) -> RawFilePath:
    name = RawFileName.build(
        daq="Daq",
        run_number=7,
        stream_type="Det",
        stream_name="Physics",
        file_tag="Raw",
        file_time=datetime.fromisoformat(file_time),
        file_sequence=1,
    ).name
    return RawFilePath.parse(f"/eos/ihep/juno/raw/{directory}/{name}")


@pytest.mark.parametrize(
    ("file_time", "directory", "zone", "agree"),
    [
        # JUNO: 23:59:59 and 00:00:00 Beijing time, each in its Beijing day's directory
        ("2026-11-23T15:59:59", "2026/1123", "Asia/Shanghai", True),
        ("2026-11-23T16:00:00", "2026/1124", "Asia/Shanghai", True),
        # a DAQ filing by UTC day, seen with Beijing days (and the other way round)
        ("2026-11-23T16:00:00", "2026/1123", "Asia/Shanghai", False),
        ("2026-11-23T15:59:59", "2026/1124", "Asia/Shanghai", False),
        # the UTC default: the directory is the UTC day of the file time, as the announcer has always filed it
        ("2026-11-23T16:00:00", "2026/1123", "UTC", True),
        ("2026-11-23T23:59:59", "2026/1123", "UTC", True),
        ("2026-11-24T00:00:00", "2026/1124", "UTC", True),
        ("2026-11-24T00:00:00", "2026/1123", "UTC", False),
        ("2026-11-23T16:00:00", "2026/1124", "UTC", False),
    ],
)
def test_the_directory_is_the_receiving_day_of_the_file_time(
    file_time: str, directory: str, zone: str, agree: bool
) -> None:
    path = daq_path(file_time, directory)
    assert (day_mismatch(path, zone) is None) is agree
    assert (file_receiving_day(path.file, zone) == path.received) is agree


def test_a_day_mismatch_says_both_days_and_the_zone() -> None:
    path = daq_path("2026-11-23T16:00:00", "2026/1123")
    assert day_mismatch(path, "Asia/Shanghai") == (
        f"{path.lfn}: FileTime 20261123160000 (UTC) is 2026-11-24 00:00:00 in Asia/Shanghai, receiving day "
        "20261124, but the file is in the 2026/1123 directory (block 20261123): the DAQ's day boundary and the "
        "receiving day's time zone (Asia/Shanghai) disagree"
    )


def announcement(path: RawFilePath) -> bytes:
    return json.dumps(
        {"FileName": path.file.name, "FilePath": path.path, "Checksum": "1a2b3c4d", "Size": 100, "Type": "RAW"}
    ).encode()


def test_the_receiver_check_quarantines_a_file_of_another_day() -> None:
    beijing = Limits(tier0_root="/eos/ihep", timezone="Asia/Shanghai")
    before = check_message(announcement(daq_path("2026-11-23T15:59:59", "2026/1123")), topic_type=None, limits=beijing)
    after = check_message(announcement(daq_path("2026-11-23T16:00:00", "2026/1124")), topic_type=None, limits=beijing)
    assert (before.block, after.block) == ("RAW-20261123", "RAW-20261124")
    misfiled = announcement(daq_path("2026-11-23T16:00:00", "2026/1123"))
    with pytest.raises(Rejection) as info:
        check_message(misfiled, topic_type=None, limits=beijing)
    assert info.value.reason is Reason.DAY_MISMATCH and info.value.reason.critical
    assert info.value.lfn == daq_path("2026-11-23T16:00:00", "2026/1123").lfn  # kept with the quarantined message
    assert "receiving day 20261124, but the file is in the 2026/1123 directory" in info.value.text
    # The same message with UTC days is what it always was: block 20261123.
    assert check_message(misfiled, topic_type=None, limits=Limits(timezone="UTC")).block == "RAW-20261123"
    # Pure message checks without a zone do not check the day; the receiver always has one (the policy's).
    assert check_message(misfiled, topic_type=None, limits=Limits()).block == "RAW-20261123"


def test_the_receiver_and_reconciler_take_the_policy_s_zone() -> None:
    from dataclasses import replace

    from rawflow.receiver import Receiver, Reconciler

    beijing = replace(load_sites(default_sites_path()), timezone="Asia/Shanghai")
    none: Any = None
    receiver = Receiver(none, none, none, beijing, none, none, none)
    assert receiver.limits.timezone == "Asia/Shanghai" and receiver.limits.tier0_root == "/eos/ihep"
    assert Receiver(none, none, none, beijing, none, none, none, Limits(timezone="UTC")).limits.timezone == "UTC"
    assert Reconciler(none, none, beijing, none, none).timezone == "Asia/Shanghai"
    assert Reconciler(none, none, load_sites(default_sites_path()), none, none).timezone == "UTC"


# -- the announcer files as the DAQ does -----------------------------------------------------------------------

TIER0 = Site(name="IHEP-EOS", role="disk", url_prefix="root://127.0.0.1:1094//eos/ihep", tier0=True)


def announcer(zone: str = "UTC") -> Announcer:
    none: Any = None  # make_files touches neither storage nor producer
    return Announcer(none, TIER0, none, timezone=zone)


def placed(files: list[Any]) -> list[tuple[str, str]]:
    """(directory, FileTime) of each file."""
    return [(f.lfn.split("/")[3] + "/" + f.lfn.split("/")[4], f.file_name.split(".")[5]) for f in files]


def test_a_series_across_beijing_midnight_is_filed_under_both_days() -> None:
    files = announcer("Asia/Shanghai").make_files(
        4, start=utc("2026-11-23T15:59:58"), sizes=(64, 64), rng=random.Random(1)
    )
    assert placed(files) == [
        ("2026/1123", "20261123155958"),
        ("2026/1123", "20261123155959"),
        ("2026/1124", "20261123160000"),
        ("2026/1124", "20261123160001"),
    ]
    assert all(day_mismatch(RawFilePath.parse(f.file_path), "Asia/Shanghai") is None for f in files)
    with pytest.raises(ValueError, match="not both"):
        announcer().make_files(1, day=date(2026, 11, 23), start=utc("2026-11-23T00:00:00"))


def test_a_day_of_files_spans_that_day_in_the_zone() -> None:
    # Block 20261124 in Beijing: 2026-11-23 16:00 UTC up to 2026-11-24 16:00 UTC.
    first, last = announcer("Asia/Shanghai").make_files(2, day=date(2026, 11, 24), first_sequence=86399, sizes=(64, 64))
    assert placed([first, last]) == [("2026/1124", "20261124155959"), ("2026/1124", "20261123160000")]
    # Rome's 25-hour day keeps every second of it, in its own directory.
    [late] = announcer("Europe/Rome").make_files(1, day=date(2026, 10, 25), first_sequence=89999, sizes=(64, 64))
    assert placed([late]) == [("2026/1025", "20261025225959")]
    # UTC, the default: the names and directories the announcer has always made.
    [plain] = announcer().make_files(1, day=date(2026, 12, 2), first_sequence=5, sizes=(64, 64))
    assert plain.lfn == "/juno/raw/2026/1202/Daq.000001.Det.Physics.Raw.20261202000005.00005.dat"
    with pytest.raises(InvalidNameError, match="Mars/Olympus"):
        announcer("Mars/Olympus")


def test_hostile_messages_include_a_file_of_another_day() -> None:
    [good] = announcer("Asia/Shanghai").make_files(1, start=utc("2026-11-23T16:00:00"), sizes=(64, 64))
    [misfiled] = [h for h in announcer("Asia/Shanghai").hostile(good) if h.expected is Reason.DAY_MISMATCH]
    body = json.loads(misfiled.value)
    assert body["FilePath"] == good.file_path.replace("/2026/1124/", "/2026/1125/")
    with pytest.raises(Rejection) as info:
        check_message(misfiled.value, topic_type=None, limits=Limits(timezone="Asia/Shanghai"))
    assert info.value.reason is Reason.DAY_MISMATCH


# -- the scheduled reconciliation's "today" --------------------------------------------------------------------


class NoBlocks:
    def list_blocks(self, data_type: object = None, *, is_open: bool | None = None) -> list[Any]:
        return []

    def get_block(self, data_type: object, block_id: str) -> None:
        return None


def test_reconciliation_looks_at_today_in_the_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    from rawflow.naming import DataType
    from rawflow.ops.reconcile import blocks_to_reconcile

    # 00:00:30 in Beijing on the 24th, still the 23rd in UTC.
    monkeypatch.setattr("rawflow.ops.reconcile.utc_now", lambda: utc("2026-11-23T16:00:30"))
    assert blocks_to_reconcile(NoBlocks(), [DataType.RAW], timezone="Asia/Shanghai") == [
        (DataType.RAW, "20261123"),
        (DataType.RAW, "20261124"),
    ]
    assert blocks_to_reconcile(NoBlocks(), [DataType.RAW]) == [(DataType.RAW, "20261122"), (DataType.RAW, "20261123")]
