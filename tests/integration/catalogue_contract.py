"""The catalogue contract: every backend runs this same class (subclass it and provide a ``catalogue`` fixture
that yields a fresh, empty catalogue)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rawflow.catalogue import (
    BlockClosedError,
    Catalogue,
    FileRecord,
    ReplicaState,
    UnknownMetadataKeyError,
    UnknownParentError,
)
from rawflow.errors import InvalidNameError, PermanentError
from rawflow.naming import DataType, RawFileName, derived_lfn, lfn_for, parse_block_id

DAY1, DAY2, DAY3 = "20251101", "20251102", "20251201"


def make_record(
    seq: int,
    *,
    block_id: str = DAY1,
    data_type: DataType = DataType.RAW,
    run: int = 1234,
    stream: str = "Physics",
    daq: str = "Daq",
    tag: str = "Tag",
    size: int | None = None,
    adler32: str | None = None,
) -> FileRecord:
    day = parse_block_id(block_id)
    name = RawFileName.build(
        daq=daq,
        run_number=run,
        stream_type="Data",
        stream_name=stream,
        file_tag=tag,
        file_time=datetime(day.year, day.month, day.day, 1, 2, 3),
        file_sequence=seq,
        data_type=data_type,
    ).name
    return FileRecord(
        lfn=lfn_for(data_type, day, name),
        size=1000 + seq if size is None else size,
        adler32=adler32 or f"{(seq * 2654435761) & 0xFFFFFFFF:08x}",
        data_type=data_type,
        block_id=block_id,
        run_number=run,
        stream=stream,
        received_at=datetime(day.year, day.month, day.day, 6, 30, tzinfo=UTC) + timedelta(seconds=seq),
    )


def derived_record(parent: FileRecord, data_type: DataType, *, adler32: str = "0badcafe") -> FileRecord:
    """The file processing makes from ``parent`` (RTRAW from RAW, ESD from RTRAW): same day, run and stream."""
    lfn = derived_lfn(parent.lfn, data_type)
    return FileRecord(
        lfn=lfn,
        size=parent.size * 2,
        adler32=adler32,
        data_type=data_type,
        block_id=parent.block_id,
        run_number=parent.run_number,
        stream=parent.stream,
        received_at=parent.received_at + timedelta(minutes=5),
    )


def lfns(records: list[FileRecord]) -> list[str]:
    return [r.lfn for r in records]


class CatalogueContract:
    """Behaviour every backend must show. ``catalogue`` is a fresh, empty catalogue per test."""

    def test_bulk_register_creates_files_blocks_datasets_and_replicas(self, catalogue: Catalogue) -> None:
        day1 = [make_record(i) for i in range(20)]
        day2 = [make_record(i, block_id=DAY2) for i in range(5)]
        rtraw = [make_record(i, data_type=DataType.RTRAW) for i in range(3)]
        result = catalogue.register_files(day1 + day2 + rtraw, site="IHEP")

        assert sorted(result.added) == sorted(lfns(day1 + day2 + rtraw))
        assert result.existing == [] and result.conflicts == []
        stored = catalogue.get_files([*lfns(day1 + day2 + rtraw), "/juno/raw/2025/1101/absent.dat"])
        assert stored == {r.lfn: r for r in day1 + day2 + rtraw}
        assert catalogue.get_file(day1[0].lfn) == day1[0]
        assert catalogue.get_file(day1[0].lfn.replace("00000", "99999")) is None
        assert stored[day1[3].lfn].received_at.tzinfo is not None
        assert catalogue.files_in_block(DataType.RAW, DAY1) == sorted(day1, key=lambda r: r.lfn)
        assert catalogue.files_in_block(DataType.RTRAW, DAY1) == sorted(rtraw, key=lambda r: r.lfn)
        assert catalogue.files_in_block(DataType.RAW, "20240101") == []
        states = catalogue.replica_states(lfns(day1))
        assert set(states) == set(lfns(day1))
        assert all(set(s) == {"IHEP"} and s["IHEP"].state is ReplicaState.VALIDATED for s in states.values())
        block = catalogue.get_block(DataType.RAW, DAY1)
        assert block is not None
        assert (block.name, block.dataset, block.is_open, block.files) == ("RAW-20251101", "RAW-202511", True, 20)
        assert block.bytes == sum(r.size for r in day1)
        assert block.created_at.tzinfo is not None and block.closed_at is None

    def test_register_with_initial_state(self, catalogue: Catalogue) -> None:
        records = [make_record(i) for i in range(4)]
        catalogue.register_files(records, site="IHEP", state=ReplicaState.REGISTERED)
        states = catalogue.replica_states(lfns(records), site="IHEP")
        assert {s["IHEP"].state for s in states.values()} == {ReplicaState.REGISTERED}

    def test_reregister_is_an_idempotent_no_op(self, catalogue: Catalogue) -> None:
        records = [make_record(i) for i in range(10)]
        catalogue.register_files(records, site="IHEP")
        catalogue.set_replica_state(lfns(records[:3]), "IHEP", ReplicaState.BAD, error="checksum mismatch")
        before = catalogue.replica_states(lfns(records))

        again = catalogue.register_files(records, site="IHEP")

        assert again.added == [] and again.conflicts == []
        assert sorted(again.existing) == sorted(lfns(records))
        assert catalogue.replica_states(lfns(records)) == before  # existing replicas keep their state
        assert len(catalogue.files_in_block(DataType.RAW, DAY1)) == 10
        assert catalogue.block_summary(DataType.RAW, DAY1) == {"IHEP": {ReplicaState.BAD: 3, ReplicaState.VALIDATED: 7}}

    def test_partial_overlap_adds_only_new_files(self, catalogue: Catalogue) -> None:
        first = [make_record(i) for i in range(6)]
        catalogue.register_files(first, site="IHEP")
        second = first[3:] + [make_record(i) for i in range(6, 9)]
        result = catalogue.register_files(second, site="IHEP")
        assert sorted(result.added) == sorted(lfns(second[3:]))
        assert sorted(result.existing) == sorted(lfns(first[3:]))
        assert len(catalogue.files_in_block(DataType.RAW, DAY1)) == 9

    def test_existing_file_registered_at_another_site_gains_a_replica(self, catalogue: Catalogue) -> None:
        records = [make_record(i) for i in range(3)]
        catalogue.register_files(records, site="IHEP")
        result = catalogue.register_files(records, site="CNAF", state=ReplicaState.REGISTERED)
        assert sorted(result.existing) == sorted(lfns(records)) and result.added == []
        states = catalogue.replica_states(lfns(records))
        assert all(s["IHEP"].state is ReplicaState.VALIDATED for s in states.values())
        assert all(s["CNAF"].state is ReplicaState.REGISTERED for s in states.values())

    def test_checksum_conflict_is_reported_and_never_overwrites(self, catalogue: Catalogue) -> None:
        original = make_record(1, adler32="0000abcd")
        catalogue.register_files([original], site="IHEP")
        changed = make_record(1, adler32="1234ffff", size=5)
        fresh = make_record(2)

        result = catalogue.register_files([changed, fresh], site="IHEP")

        assert result.conflicts == [(original.lfn, "0000abcd", "1234ffff")]
        assert result.added == [fresh.lfn] and result.existing == []
        assert catalogue.get_file(original.lfn) == original

    def test_conflict_within_one_call(self, catalogue: Catalogue) -> None:
        first = make_record(1, adler32="00000001")
        repeat = make_record(1, adler32="00000002")
        result = catalogue.register_files([first, first, repeat], site="IHEP")
        assert result.added == [first.lfn]
        assert result.conflicts == [(first.lfn, "00000001", "00000002")]
        assert catalogue.get_file(first.lfn) == first

    def test_metadata_queries(self, catalogue: Catalogue) -> None:
        run1 = [make_record(i, run=1) for i in range(4)]
        run2 = [make_record(i, run=2, stream="Calib") for i in range(3)]
        other_day = [make_record(i, run=1, block_id=DAY2) for i in range(2)]
        rtraw = [make_record(i, run=1, data_type=DataType.RTRAW) for i in range(2)]
        catalogue.register_files(run1 + run2 + other_day + rtraw, site="IHEP")

        assert catalogue.query_files(Block=DAY1, Type="RAW") == sorted(lfns(run1 + run2))
        assert catalogue.query_files(Block=DAY1, Type=DataType.RTRAW.value) == sorted(lfns(rtraw))
        assert catalogue.query_files(Run=2) == sorted(lfns(run2))
        assert catalogue.query_files(Block=DAY1, Type="RAW", Run=1) == sorted(lfns(run1))
        assert catalogue.query_files(Stream="Calib") == sorted(lfns(run2))
        assert catalogue.query_files(Block=DAY2) == sorted(lfns(other_day))
        assert catalogue.query_files(Block="20240101") == []
        with pytest.raises(UnknownMetadataKeyError):
            catalogue.query_files(Colour="blue")

    def test_replica_state_transitions(self, catalogue: Catalogue) -> None:
        records = [make_record(i) for i in range(5)]
        names = lfns(records)
        catalogue.register_files(records, site="IHEP")

        assert catalogue.set_replica_state(names, "CNAF", ReplicaState.COPYING) == 5
        assert catalogue.set_replica_state(names, "CNAF", ReplicaState.COPYING) == 0  # no change, no new attempt
        copying = catalogue.replica_states(names, site="CNAF")
        assert {(i["CNAF"].state, i["CNAF"].attempts) for i in copying.values()} == {(ReplicaState.COPYING, 1)}
        assert all(set(per_site) == {"CNAF"} for per_site in copying.values())

        assert catalogue.set_replica_state(names[:2], "CNAF", ReplicaState.BAD, error="adler32 differs") == 2
        assert catalogue.set_replica_state(names[:2], "CNAF", ReplicaState.BAD, error="size differs") == 2
        assert catalogue.set_replica_state(names[:1], "CNAF", ReplicaState.COPYING) == 1
        assert catalogue.set_replica_state(names[2:], "CNAF", ReplicaState.VALIDATED) == 3
        unknown = "/juno/raw/2025/1101/Daq.001234.Data.Physics.Tag.20251101010203.77777.dat"
        assert catalogue.set_replica_state([*names[2:], unknown], "CNAF-TAPE", ReplicaState.ARCHIVED) == 3

        states = catalogue.replica_states(names)
        assert unknown not in states
        assert states[names[0]]["CNAF"].state is ReplicaState.COPYING
        assert states[names[0]]["CNAF"].attempts == 2 and states[names[0]]["CNAF"].error is None
        assert states[names[1]]["CNAF"].state is ReplicaState.BAD
        assert states[names[1]]["CNAF"].error == "size differs"
        assert states[names[4]]["CNAF"].state is ReplicaState.VALIDATED and states[names[4]]["CNAF"].error is None
        assert states[names[4]]["CNAF-TAPE"].state is ReplicaState.ARCHIVED
        assert states[names[4]]["IHEP"].state is ReplicaState.VALIDATED
        assert states[names[0]]["IHEP"].updated_at <= states[names[0]]["CNAF"].updated_at
        assert states[names[0]]["CNAF"].updated_at.tzinfo is not None
        by_block = catalogue.replica_states(block=(DataType.RAW, DAY1), site="CNAF-TAPE")
        assert set(by_block) == set(names[2:])
        with pytest.raises(ValueError):
            catalogue.replica_states()

    def test_block_summary_counts_per_site_and_state(self, catalogue: Catalogue) -> None:
        records = [make_record(i) for i in range(12)]
        names = lfns(records)
        catalogue.register_files(records, site="IHEP")
        catalogue.register_files([make_record(i, block_id=DAY2) for i in range(4)], site="IHEP")
        catalogue.set_replica_state(names[:6], "CNAF", ReplicaState.COPYING)
        catalogue.set_replica_state(names[:4], "CNAF", ReplicaState.VALIDATED)
        catalogue.set_replica_state(names[4:5], "CNAF", ReplicaState.BAD, error="timeout")
        catalogue.set_replica_state(names[:2], "IHEP", ReplicaState.ARCHIVED)

        assert catalogue.block_summary(DataType.RAW, DAY1) == {
            "IHEP": {ReplicaState.VALIDATED: 10, ReplicaState.ARCHIVED: 2},
            "CNAF": {ReplicaState.VALIDATED: 4, ReplicaState.BAD: 1, ReplicaState.COPYING: 1},
        }
        assert catalogue.block_summary(DataType.RAW, DAY2) == {"IHEP": {ReplicaState.VALIDATED: 4}}
        assert catalogue.block_summary(DataType.RAW, "20240101") == {}

    def test_block_close(self, catalogue: Catalogue) -> None:
        records = [make_record(i) for i in range(3)]
        catalogue.register_files(records, site="IHEP")
        catalogue.register_files([make_record(0, block_id=DAY2)], site="IHEP")

        assert catalogue.close_block(DataType.RAW, DAY1) is True
        assert catalogue.close_block(DataType.RAW, DAY1) is False
        block = catalogue.get_block(DataType.RAW, DAY1)
        assert block is not None and block.is_open is False and block.closed_at is not None
        assert block.files == 3
        assert [b.name for b in catalogue.list_blocks(is_open=False)] == ["RAW-20251101"]
        assert [b.name for b in catalogue.list_blocks(DataType.RAW, is_open=True)] == ["RAW-20251102"]
        assert [b.name for b in catalogue.list_blocks()] == ["RAW-20251101", "RAW-20251102"]
        assert catalogue.list_blocks(DataType.RTRAW) == []

        late = make_record(7)
        with pytest.raises(BlockClosedError):
            catalogue.register_files([late, make_record(1, block_id=DAY2)], site="IHEP")
        assert catalogue.get_file(late.lfn) is None
        assert catalogue.get_file(make_record(1, block_id=DAY2).lfn) is None  # refused before any write
        again = catalogue.register_files(records, site="IHEP")  # nothing new: a closed block is no obstacle
        assert sorted(again.existing) == sorted(lfns(records))
        assert catalogue.get_block(DataType.RAW, "20240101") is None
        with pytest.raises(PermanentError):
            catalogue.close_block(DataType.RAW, "20240101")

    def test_datasets_group_blocks_by_type_and_month(self, catalogue: Catalogue) -> None:
        catalogue.register_files(
            [
                make_record(1),
                make_record(1, block_id=DAY2),
                make_record(1, block_id=DAY3),
                make_record(1, data_type=DataType.RTRAW),
            ],
            site="IHEP",
        )
        assert catalogue.datasets() == ["RAW-202511", "RAW-202512", "RTRAW-202511"]
        assert catalogue.datasets(DataType.RTRAW) == ["RTRAW-202511"]
        assert catalogue.blocks_in_dataset("RAW-202511") == ["RAW-20251101", "RAW-20251102"]
        assert catalogue.blocks_in_dataset("RAW-202512") == ["RAW-20251201"]
        assert catalogue.blocks_in_dataset("RAW-209901") == []

    def test_block_of_more_than_a_thousand_files(self, catalogue: Catalogue) -> None:
        records = [make_record(i) for i in range(1234)]  # beyond Rucio's 1,000 DIDs per call
        result = catalogue.register_files(records, site="IHEP")
        assert len(result.added) == 1234

        block = catalogue.get_block(DataType.RAW, DAY1)
        assert block is not None and block.files == 1234 and block.bytes == sum(r.size for r in records)
        assert len(catalogue.files_in_block(DataType.RAW, DAY1)) == 1234
        assert len(catalogue.query_files(Block=DAY1, Type="RAW")) == 1234
        assert catalogue.set_replica_state(lfns(records), "CNAF", ReplicaState.COPYING) == 1234
        assert catalogue.block_summary(DataType.RAW, DAY1) == {
            "IHEP": {ReplicaState.VALIDATED: 1234},
            "CNAF": {ReplicaState.COPYING: 1234},
        }
        assert len(catalogue.register_files(records, site="IHEP").existing) == 1234

    def test_odd_but_valid_names(self, catalogue: Catalogue) -> None:
        odd = [
            make_record(0, daq="DAQ-1_b", tag="v1-2_3", stream="Str-eam_9"),
            make_record(1, daq="daq", tag="TAG"),  # differs from the next only by case
            make_record(1, daq="DAQ", tag="TAG"),
            make_record(99999, run=9_999_999_999),
            make_record(2, data_type=DataType.RTRAW, block_id="20240229"),
        ]
        # The longest file name this catalogue stores (Rucio allows 250 characters for a whole DID name).
        base = make_record(3)
        room = min(catalogue.max_lfn_length, len(base.lfn) - len(base.lfn.rsplit("/", 1)[1]) + 255) - len(base.lfn)
        odd.append(make_record(3, tag="T" + "x" * (room + 2)))
        assert len(odd[-1].lfn) == min(catalogue.max_lfn_length, len(base.lfn) - len(base.lfn.rsplit("/", 1)[1]) + 255)

        result = catalogue.register_files(odd, site="IHEP")
        assert sorted(result.added) == sorted(lfns(odd))
        assert catalogue.get_files(lfns(odd)) == {r.lfn: r for r in odd}
        assert catalogue.query_files(Run=9_999_999_999) == [odd[3].lfn]
        assert catalogue.query_files(Stream="Str-eam_9") == [odd[0].lfn]

    def test_invalid_names_are_refused_before_any_write(self, catalogue: Catalogue) -> None:
        good = make_record(1)
        unicode_name = FileRecord(
            **{**_fields(make_record(2)), "lfn": good.lfn.replace("Daq.", "Däq.").replace("00001", "00002")}
        )
        with pytest.raises(InvalidNameError):
            catalogue.register_files([good, unicode_name], site="IHEP")
        wrong_block = FileRecord(**{**_fields(make_record(3)), "block_id": DAY2})
        with pytest.raises(InvalidNameError):
            catalogue.register_files([good, wrong_block], site="IHEP")
        wrong_type = FileRecord(**{**_fields(make_record(4)), "data_type": DataType.RTRAW})
        with pytest.raises(InvalidNameError):
            catalogue.register_files([wrong_type], site="IHEP")
        too_long = make_record(5, tag="T" + "y" * 200)  # a valid name, an LFN over Rucio's 250
        if len(too_long.lfn) > catalogue.max_lfn_length:
            with pytest.raises(InvalidNameError):
                catalogue.register_files([good, too_long], site="IHEP")
        assert catalogue.get_file(good.lfn) is None
        assert catalogue.get_block(DataType.RAW, DAY1) is None

    def test_lineage_raw_rtraw_esd_queryable_both_ways(self, catalogue: Catalogue) -> None:
        raws = [make_record(i) for i in range(4)]
        catalogue.register_files(raws, site="T0")
        assert [f.lfn for f in catalogue.files_without_children(DataType.RAW, DAY1, DataType.RTRAW)] == lfns(raws)
        rtraws = [derived_record(r, DataType.RTRAW) for r in raws[:3]]
        result = catalogue.register_files(
            rtraws, site="T0", parents={c.lfn: [p.lfn] for c, p in zip(rtraws, raws[:3], strict=True)}
        )
        assert sorted(result.added) == lfns(rtraws)
        esd = derived_record(rtraws[0], DataType.ESD)
        catalogue.register_files([esd], site="T0", parents={esd.lfn: [rtraws[0].lfn]})
        # Both ways, with and without a type filter.
        assert catalogue.children([raws[0].lfn, raws[3].lfn]) == {raws[0].lfn: [rtraws[0].lfn]}
        assert catalogue.children([rtraws[0].lfn], DataType.ESD) == {rtraws[0].lfn: [esd.lfn]}
        assert catalogue.children([rtraws[0].lfn], DataType.RTRAW) == {}
        assert catalogue.parents([esd.lfn, rtraws[1].lfn, raws[0].lfn]) == {
            esd.lfn: [rtraws[0].lfn],
            rtraws[1].lfn: [raws[1].lfn],
        }
        # The keep-up's question: which RAW files of the day have no RTRAW yet; which RTRAW no ESD.
        assert [f.lfn for f in catalogue.files_without_children(DataType.RAW, DAY1, DataType.RTRAW)] == [raws[3].lfn]
        assert [f.lfn for f in catalogue.files_without_children(DataType.RTRAW, DAY1, DataType.ESD)] == lfns(rtraws[1:])
        assert catalogue.files_without_children(DataType.RAW, DAY2, DataType.RTRAW) == []
        assert catalogue.get_file(esd.lfn) is not None
        assert catalogue.get_file(esd.lfn).data_type is DataType.ESD  # type: ignore[union-attr]
        assert catalogue.query_files(Block=DAY1, Type="ESD") == [esd.lfn]

    def test_lineage_registration_is_idempotent(self, catalogue: Catalogue) -> None:
        raw = make_record(1)
        catalogue.register_files([raw], site="T0")
        rtraw = derived_record(raw, DataType.RTRAW)
        # Registered without lineage first (a crash between steps), then again with it: the link is added once.
        catalogue.register_files([rtraw], site="T0")
        for _ in range(2):
            again = catalogue.register_files([rtraw], site="T0", parents={rtraw.lfn: [raw.lfn]})
            assert again.existing == [rtraw.lfn]
        assert catalogue.parents([rtraw.lfn]) == {rtraw.lfn: [raw.lfn]}
        assert catalogue.children([raw.lfn]) == {raw.lfn: [rtraw.lfn]}

    def test_lineage_parent_in_the_same_call(self, catalogue: Catalogue) -> None:
        raw = make_record(2)
        rtraw = derived_record(raw, DataType.RTRAW)
        catalogue.register_files([raw, rtraw], site="T0", parents={rtraw.lfn: [raw.lfn]})
        assert catalogue.parents([rtraw.lfn]) == {rtraw.lfn: [raw.lfn]}

    def test_bad_lineage_is_refused_before_any_write(self, catalogue: Catalogue) -> None:
        raw = make_record(3)
        rtraw = derived_record(raw, DataType.RTRAW)
        with pytest.raises(UnknownParentError, match="not in the catalogue"):
            catalogue.register_files([rtraw], site="T0", parents={rtraw.lfn: [raw.lfn]})
        assert catalogue.get_file(rtraw.lfn) is None
        catalogue.register_files([raw], site="T0")
        other_day = make_record(3, block_id=DAY2)
        with pytest.raises(InvalidNameError, match="day"):
            catalogue.register_files([rtraw], site="T0", parents={rtraw.lfn: [other_day.lfn]})
        with pytest.raises(InvalidNameError, match="not being registered"):
            catalogue.register_files([rtraw], site="T0", parents={"/juno/rtraw/2025/1101/x.rtraw": [raw.lfn]})
        assert catalogue.get_file(rtraw.lfn) is None

    def test_empty_calls(self, catalogue: Catalogue) -> None:
        result = catalogue.register_files([], site="IHEP")
        assert (result.added, result.existing, result.conflicts) == ([], [], [])
        assert catalogue.set_replica_state([], "IHEP", ReplicaState.BAD) == 0
        assert catalogue.get_files([]) == {}
        assert catalogue.datasets() == [] and catalogue.list_blocks() == []


def _fields(record: FileRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in FileRecord.__dataclass_fields__}
