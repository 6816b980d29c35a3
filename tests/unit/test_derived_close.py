"""When a derived block (RTRAW, ESD) may close: after its parent block, once keep-up owes nothing for the day, or
a bounded wait after the parent closed (rawflow.processing.closing) — and the block round honours it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from rawflow.catalogue.base import BlockClosedError, FileRecord
from rawflow.catalogue.sql import SqlCatalogue
from rawflow.naming import DataType, RawFileName, derived_lfn, lfn_for
from rawflow.processing.closing import MAX_LISTED, decide_close, derived_close
from rawflow.processing.jobs import JobRecord, JobStore
from rawflow.processing.planning import RAW2RTRAW, REC, JobPhase, plan_conversions
from rawflow.replication import RoundOutcome, RoundSettings, run_site_round
from rawflow.sites import default_sites_path, load_sites

BLOCK = "20251101"
DAY = date(2025, 11, 1)
NOW = datetime(2025, 11, 2, 3, 0, tzinfo=UTC)
T0 = "IHEP-EOS"


def test_rule_parent_open_holds_whatever_keepup_did() -> None:
    decision = decide_close(
        block="RTRAW-1",
        parent="RAW-1",
        parent_exists=True,
        parent_open=True,
        parent_closed_at=None,
        pending={},
        now=NOW,
    )
    assert not decision.close and "RAW-1 to close" in decision.reason and decision.deadline is None


def test_rule_parent_closed_nothing_pending_closes() -> None:
    decision = decide_close(
        block="ESD-1",
        parent="RTRAW-1",
        parent_exists=True,
        parent_open=False,
        parent_closed_at=NOW,
        pending={},
        now=NOW,
    )
    assert decision.close and not decision.forced and decision.missing_count == 0


def test_rule_pending_holds_until_the_bound_then_closes_and_names_what_is_missing() -> None:
    pending = {f"/juno/raw/2025/1101/f{i:03d}.dat": "keep-up job running" for i in range(MAX_LISTED + 5)}
    closed_at = NOW - timedelta(hours=1)
    common = {
        "block": "RTRAW-1",
        "parent": "RAW-1",
        "parent_exists": True,
        "parent_open": False,
        "parent_closed_at": closed_at,
        "pending": pending,
        "max_wait": timedelta(hours=2),
    }
    held = decide_close(now=NOW, **common)  # type: ignore[arg-type]
    assert not held.close and held.deadline == closed_at + timedelta(hours=2)
    assert held.missing_count == MAX_LISTED + 5 and len(held.missing) == MAX_LISTED
    forced = decide_close(now=closed_at + timedelta(hours=2), **common)  # type: ignore[arg-type]
    assert forced.close and forced.forced and forced.missing_count == MAX_LISTED + 5
    assert "f000.dat" in next(iter(forced.missing)) and "closed without them" in forced.reason
    assert forced.to_dict()["missing_count"] == MAX_LISTED + 5


def test_rule_no_parent_block_closes() -> None:
    decision = decide_close(
        block="ESD-1",
        parent="RTRAW-1",
        parent_exists=False,
        parent_open=False,
        parent_closed_at=None,
        pending={},
        now=NOW,
    )
    assert decision.close


# -- over a real SQL catalogue and jobs table ---------------------------------------------------------------


@dataclass
class Day:
    catalogue: SqlCatalogue
    jobs: JobStore
    raws: list[FileRecord]


@pytest.fixture
def day(tmp_path: Path) -> Iterator[Day]:
    url = f"sqlite:///{tmp_path}/catalogue.db"
    catalogue, jobs = SqlCatalogue(url), JobStore(url)
    raws = [_record(DataType.RAW, _raw_lfn(i)) for i in range(3)]
    catalogue.register_files(raws, site=T0)
    try:
        yield Day(catalogue, jobs, raws)
    finally:
        jobs.close()
        catalogue.close()


def _raw_lfn(i: int) -> str:
    name = RawFileName.build(
        daq="JUNO",
        run_number=7,
        stream_type="Physics",
        stream_name="Global",
        file_tag="T",
        file_time=datetime(2025, 11, 1, 8, 0, i),
        file_sequence=i,
    ).name
    return lfn_for(DataType.RAW, DAY, name)


def _record(kind: DataType, lfn: str) -> FileRecord:
    return FileRecord(lfn, 1000, "0000abcd", kind, BLOCK, 7, "Global", NOW - timedelta(days=1))


def _derive(day: Day, raw: FileRecord, kind: DataType = DataType.RTRAW) -> str:
    parent = raw.lfn if kind is DataType.RTRAW else derived_lfn(raw.lfn, DataType.RTRAW)
    child = derived_lfn(parent, kind)
    day.catalogue.register_files([_record(kind, child)], site=T0, parents={child: [parent]})
    return child


def _job(day: Day, payload: str, lfn: str, state: JobPhase, reason: str | None = None) -> None:
    (planned,) = plan_conversions(payload, [(lfn, 7)], block_id=BLOCK)
    day.jobs.upsert([JobRecord.planned(planned, "htcondor").evolve(state=state, reason=reason, attempts=1)])


def test_rtraw_waits_for_raw_then_for_keepup_problematic_files_do_not_hold_it(day: Day) -> None:
    first, second, third = day.raws
    _derive(day, first)
    assert not derived_close(day.catalogue, day.jobs, DataType.RTRAW, BLOCK, now=NOW).close  # RAW still open

    day.catalogue.close_block(DataType.RAW, BLOCK)
    _job(day, RAW2RTRAW, second.lfn, JobPhase.RUNNING)
    decision = derived_close(day.catalogue, day.jobs, DataType.RTRAW, BLOCK, now=NOW)
    assert not decision.close
    assert decision.missing == {second.lfn: "keep-up job running", third.lfn: "no keep-up job yet"}

    _derive(day, second)  # the running job's output is registered
    _job(day, RAW2RTRAW, third.lfn, JobPhase.PROBLEMATIC, reason="exit 3: malformed RAW")
    decision = derived_close(day.catalogue, day.jobs, DataType.RTRAW, BLOCK, now=NOW)
    assert decision.close and not decision.forced, decision

    # A shifter's retry makes the file pending again.
    _job(day, RAW2RTRAW, third.lfn, JobPhase.RETRY_WAIT)
    assert not derived_close(day.catalogue, day.jobs, DataType.RTRAW, BLOCK, now=NOW).close


def test_esd_follows_its_rtraw_block_and_the_bound_forces_it(day: Day) -> None:
    for raw in day.raws:
        _derive(day, raw)
    _derive(day, day.raws[0], DataType.ESD)
    day.catalogue.close_block(DataType.RAW, BLOCK)
    assert not derived_close(day.catalogue, day.jobs, DataType.ESD, BLOCK, now=NOW).close  # RTRAW open
    day.catalogue.close_block(DataType.RTRAW, BLOCK)
    closed_at = day.catalogue.get_block(DataType.RTRAW, BLOCK).closed_at  # type: ignore[union-attr]
    assert closed_at is not None
    held = derived_close(day.catalogue, day.jobs, DataType.ESD, BLOCK, now=closed_at, max_wait=timedelta(hours=1))
    assert not held.close and held.missing_count == 2
    # A campaign's job over the same file is not keep-up's: it does not resolve the file.
    (planned,) = plan_conversions(REC, [(derived_lfn(day.raws[1].lfn, DataType.RTRAW), 7)], block_id=BLOCK)
    campaign = JobRecord.planned(planned, "htcondor")
    from dataclasses import replace

    day.jobs.upsert([replace(campaign, key="c." + campaign.key, state=JobPhase.PROBLEMATIC)])
    later = closed_at + timedelta(hours=1)
    forced = derived_close(day.catalogue, day.jobs, DataType.ESD, BLOCK, now=later, max_wait=timedelta(hours=1))
    assert forced.close and forced.forced and forced.missing_count == 2


class NoStorage:
    """The rounds below have nothing to copy: any storage call is a bug."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"storage.{name} called")


def test_block_round_holds_a_due_derived_block_open_so_a_late_rtraw_registers(day: Day) -> None:
    sites = load_sites(default_sites_path())
    settings = RoundSettings(
        site="CNAF-STORM",
        data_type=DataType.RTRAW,
        block_id=BLOCK,
        close_at=NOW - timedelta(hours=1),  # end of day + grace has passed
        close_recheck_seconds=120,
    )

    def gate(now: datetime):  # type: ignore[no-untyped-def]
        return derived_close(day.catalogue, day.jobs, DataType.RTRAW, BLOCK, now=now, max_wait=timedelta(hours=6))

    def round_now():  # type: ignore[no-untyped-def]
        return run_site_round(
            settings,
            catalogue=day.catalogue,
            sites=sites,
            storage=NoStorage(),  # type: ignore[arg-type]
            transfertool=lambda: pytest.fail("nothing to transfer"),
            close_gate=gate,
            now=NOW,
        )

    # Keep-up has made nothing yet and RAW is open: the (not yet existing) RTRAW block is not "empty and closed".
    before = datetime.now(UTC)
    result = round_now()
    assert result.outcome is RoundOutcome.WAIT and "RAW-20251101 to close" in result.totals["close_held"]
    assert result.wake_at is not None and result.wake_at >= before + timedelta(seconds=119)

    # RAW closes; keep-up then registers the RTRAW of every file — the late one too, into the open block.
    day.catalogue.close_block(DataType.RAW, BLOCK)
    result = round_now()
    assert result.outcome is RoundOutcome.WAIT and "owes 3 file(s)" in result.totals["close_held"]
    for raw in day.raws:
        _derive(day, raw)
    assert day.catalogue.get_block(DataType.RTRAW, BLOCK).is_open  # type: ignore[union-attr]

    day.catalogue.register_files([_record(DataType.RTRAW, derived_lfn(day.raws[0].lfn, DataType.RTRAW))], site=T0)


def _round(day: Day, now: datetime, max_wait: timedelta = timedelta(hours=6)):  # type: ignore[no-untyped-def]
    settings = RoundSettings(site="CNAF-STORM", data_type=DataType.RTRAW, block_id=BLOCK, close_at=NOW)
    return run_site_round(
        settings,
        catalogue=day.catalogue,
        sites=load_sites(default_sites_path()),
        storage=NoStorage(),  # type: ignore[arg-type]
        transfertool=lambda: pytest.fail("nothing to transfer"),
        close_gate=lambda at: derived_close(day.catalogue, day.jobs, DataType.RTRAW, BLOCK, now=at, max_wait=max_wait),
        now=now,
    )


def test_block_round_ends_once_every_raw_file_is_problematic(day: Day) -> None:
    day.catalogue.close_block(DataType.RAW, BLOCK)
    for raw in day.raws:
        _job(day, RAW2RTRAW, raw.lfn, JobPhase.PROBLEMATIC, reason="exit 3: malformed RAW")
    result = _round(day, NOW)
    assert result.outcome is RoundOutcome.DONE and result.progress.assigned == 0
    assert "close_held" not in result.totals and "closed_without" not in result.totals


def test_block_round_closes_at_the_bound_and_reports_what_is_missing(day: Day) -> None:
    day.catalogue.close_block(DataType.RAW, BLOCK)
    _job(day, RAW2RTRAW, day.raws[0].lfn, JobPhase.QUEUED)
    assert _round(day, datetime.now(UTC)).outcome is RoundOutcome.WAIT  # within the bound: held open
    result = _round(day, datetime.now(UTC) + timedelta(hours=6, minutes=1))
    assert result.outcome is RoundOutcome.DONE
    missing = result.totals["closed_without"]
    assert missing["count"] == 3 and missing["files"][day.raws[0].lfn] == "keep-up job queued"


def test_without_the_gate_a_late_rtraw_cannot_register(day: Day) -> None:
    """The failure the gate prevents: the RTRAW block closed by the clock refuses keep-up's late output."""
    _derive(day, day.raws[0])
    day.catalogue.close_block(DataType.RTRAW, BLOCK)
    with pytest.raises(BlockClosedError):
        _derive(day, day.raws[1])
