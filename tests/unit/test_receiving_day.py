"""The receiving day's time zone: naming, site policy, the block timetable and the block DAG's task agree.

Instants one second either side of local midnight, in a DST-free zone (Asia/Shanghai, JUNO's day boundary),
in UTC and in a zone with daylight saving (Europe/Rome: 23 h and 25 h days).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pendulum
import pytest
import yaml

from rawflow.errors import ConfigError, InvalidNameError
from rawflow.naming import receiving_day, receiving_day_bounds
from rawflow.sites import default_sites_path, load_sites

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
