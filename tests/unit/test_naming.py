from __future__ import annotations

from datetime import date, datetime

import pytest

from rawflow.errors import InvalidNameError
from rawflow.naming import (
    DataType,
    RawFileName,
    RawFilePath,
    block_directory_lfn,
    block_id_for,
    block_name,
    dataset_name,
    derived_lfn,
    lfn_from_pfn,
    parse_block_id,
    parse_lfn,
    pfn_for,
)

GOOD = "JUNO.012345.Physics.Global.ds-0.20251101083000.00042.dat"


def test_parse_good_name() -> None:
    f = RawFileName.parse(GOOD)
    assert (f.daq, f.run_number, f.stream_type, f.stream_name, f.file_tag) == (
        "JUNO",
        12345,
        "Physics",
        "Global",
        "ds-0",
    )
    assert f.file_time == datetime(2025, 11, 1, 8, 30, 0)
    assert f.file_sequence == 42
    assert f.data_type is DataType.RAW


def test_build_round_trips() -> None:
    built = RawFileName.build(
        daq="JUNO",
        run_number=7,
        stream_type="Physics",
        stream_name="Global",
        file_tag="ds-1",
        file_time=datetime(2026, 1, 2, 3, 4, 5),
        file_sequence=9,
        data_type=DataType.RTRAW,
    )
    assert built.name == "JUNO.000007.Physics.Global.ds-1.20260102030405.00009.rtraw"
    assert RawFileName.parse(built.name) == built


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("JUNO.12x.Physics.Global.ds-0.20251101083000.00042.dat", "RunNumber", "12x"),
        ("JUNO.1.Physics.Global.ds-0.20251301083000.1.dat", "FileTime", "20251301083000"),
        ("JUNO.1.Physics.Global.ds-0.2025110108300.1.dat", "FileTime", "2025110108300"),
        ("JUNO.1.Physics.Global.ds-0.20251101083000.seq.dat", "FileSequence", "seq"),
        ("JUNO.1.Phy sics.Global.ds-0.20251101083000.1.dat", "StreamType", "Phy sics"),
        ("JUNO.1.Physics.Global.20251101083000.1.dat", "FileName", "JUNO.1.Physics.Global.20251101083000.1.dat"),
        (
            "JUNO.1.Physics.Global.ds-0.20251101083000.1.txt",
            "FileName",
            "JUNO.1.Physics.Global.ds-0.20251101083000.1.txt",
        ),
        ("", "FileName", ""),
    ],
)
def test_bad_names_name_the_field_and_value(name: str, field: str, value: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        RawFileName.parse(name)
    assert info.value.field == field
    assert info.value.value == value
    message = str(info.value)
    assert "\n" not in message
    assert field in message and repr(value) in message


def test_parse_path_and_lfn() -> None:
    p = RawFilePath.parse(f"/eos/ihep/juno/raw/2025/1101/{GOOD}")
    assert p.root == "/eos/ihep"
    assert p.received == date(2025, 11, 1)
    assert p.block_id == "20251101"
    assert p.lfn == f"/juno/raw/2025/1101/{GOOD}"
    assert parse_lfn(p.lfn).file == p.file


def test_rtraw_path() -> None:
    name = GOOD.replace(".dat", ".rtraw")
    p = RawFilePath.parse(f"/data/juno/rtraw/2025/1231/{name}")
    assert p.data_type is DataType.RTRAW
    assert p.block_id == "20251231"


@pytest.mark.parametrize(
    "path",
    [
        f"eos/juno/raw/2025/1101/{GOOD}",
        f"/eos/juno/raw/2025/1101/../1102/{GOOD}",
        f"/eos/../juno/raw/2025/1101/{GOOD}",
        f"/eos/juno/raw/2025/1301/{GOOD}",
        f"/eos/juno/raw/25/1101/{GOOD}",
        f"/eos/juno/esd/2025/1101/{GOOD}",
        f"/eos/juno/rtraw/2025/1101/{GOOD}",
        f"/eos/juno/RAW/2025/1101/{GOOD}",
        f"/eos//juno/raw/2025/1101/{GOOD}",
        f"/eos/other/raw/2025/1101/{GOOD}",
    ],
)
def test_bad_paths(path: str) -> None:
    with pytest.raises(InvalidNameError):
        RawFilePath.parse(path)


def test_lfn_must_have_empty_root() -> None:
    with pytest.raises(InvalidNameError, match="LFN"):
        parse_lfn(f"/eos/juno/raw/2025/1101/{GOOD}")


def test_block_ids_and_names() -> None:
    assert block_id_for(date(2025, 3, 2)) == "20250302"
    assert parse_block_id("20250302") == date(2025, 3, 2)
    assert block_name(DataType.RAW, "20250302") == "RAW-20250302"
    assert dataset_name(DataType.RTRAW, "20250302") == "RTRAW-202503"
    assert block_directory_lfn(DataType.RAW, "20250302") == "/juno/raw/2025/0302"
    for bad in ("2025032", "20250230", "abcdefgh"):
        with pytest.raises(InvalidNameError):
            parse_block_id(bad)


def test_pfn_round_trip() -> None:
    lfn = f"/juno/raw/2025/1101/{GOOD}"
    pfn = pfn_for("root://127.0.0.1:1094//data/", lfn)
    assert pfn == f"root://127.0.0.1:1094//data{lfn}"
    assert lfn_from_pfn("root://127.0.0.1:1094//data", pfn) == lfn
    with pytest.raises(InvalidNameError):
        lfn_from_pfn("root://other:1094//data", pfn)


def test_data_type_parse() -> None:
    assert DataType.parse("raw") is DataType.RAW
    assert DataType.parse("esd") is DataType.ESD
    with pytest.raises(InvalidNameError, match="Type"):
        DataType.parse("DST")


def test_derived_lfns_follow_the_processing_chain() -> None:
    raw = f"/juno/raw/2025/1101/{GOOD}"
    rtraw = derived_lfn(raw, DataType.RTRAW)
    assert rtraw == f"/juno/rtraw/2025/1101/{GOOD.replace('.dat', '.rtraw')}"
    esd = derived_lfn(rtraw, DataType.ESD)
    assert esd == f"/juno/esd/2025/1101/{GOOD.replace('.dat', '.esd')}"
    assert parse_lfn(esd).data_type is DataType.ESD
    assert parse_lfn(esd).block_id == "20251101"
    with pytest.raises(InvalidNameError, match="does not make"):
        derived_lfn(raw, DataType.ESD)
    with pytest.raises(InvalidNameError):
        derived_lfn(esd, DataType.RAW)
