"""Shared catalogue checks: record validation, repeats within a call, block names, metadata keys."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from rawflow.catalogue import METADATA_KEYS, ReplicaState, UnknownMetadataKeyError
from rawflow.catalogue.base import check_metadata_keys, chunked, parse_block_name, split_repeats, validate_files
from rawflow.catalogue.rucio_backend import RUCIO_STATE
from rawflow.errors import InvalidNameError
from rawflow.naming import DataType
from tests.integration.catalogue_contract import make_record


def test_valid_records_pass() -> None:
    validate_files([make_record(1), make_record(2, data_type=DataType.RTRAW, block_id="20240229")], 1024)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lfn": "/juno/raw/2025/1101/Däq.001.dat"}, "LFN"),
        ({"lfn": "/other/raw/2025/1101/Daq.dat"}, "LFN"),
        ({"block_id": "20251102"}, "LFN"),
        ({"block_id": "20251341"}, "Block"),
        ({"data_type": DataType.RTRAW}, "LFN"),
        ({"adler32": "ABCDEF01"}, "adler32"),
        ({"adler32": "abc"}, "adler32"),
        ({"size": -1}, "size"),
        ({"received_at": datetime(2025, 11, 1)}, "received_at"),
    ],
)
def test_invalid_records_are_refused(change: dict[str, object], field: str) -> None:
    record = dataclasses.replace(make_record(1), **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidNameError) as raised:
        validate_files([make_record(0), record], 1024)
    assert raised.value.field == field


def test_lfn_over_the_backend_limit_is_refused() -> None:
    record = make_record(1)
    validate_files([record], len(record.lfn))
    with pytest.raises(InvalidNameError, match="limit"):
        validate_files([record], len(record.lfn) - 1)


def test_split_repeats_keeps_the_first_and_reports_conflicting_repeats() -> None:
    a, b = make_record(1, adler32="00000001"), make_record(2)
    a_again, a_changed = make_record(1, adler32="00000001"), make_record(1, adler32="00000009")
    unique, conflicts = split_repeats([a, b, a_again, a_changed])
    assert unique == [a, b]
    assert conflicts == [(a.lfn, "00000001", "00000009")]


def test_block_names_round_trip() -> None:
    assert parse_block_name("RAW-20251101") == (DataType.RAW, "20251101")
    assert parse_block_name("RTRAW-20240229") == (DataType.RTRAW, "20240229")
    assert make_record(1).block == "RAW-20251101" and make_record(1).dataset == "RAW-202511"
    with pytest.raises(InvalidNameError):
        parse_block_name("RAW-2025110")
    with pytest.raises(InvalidNameError):
        parse_block_name("FOO-20251101")


def test_metadata_keys() -> None:
    check_metadata_keys({key: "x" for key in METADATA_KEYS})
    with pytest.raises(UnknownMetadataKeyError, match="'run'"):
        check_metadata_keys({"run": 1})
    assert make_record(1, run=7, stream="S").metadata() == {"Block": "20251101", "Type": "RAW", "Run": 7, "Stream": "S"}


def test_chunked_covers_everything_in_order() -> None:
    items = list(range(2501))
    chunks = list(chunked(items, 1000))
    assert [len(c) for c in chunks] == [1000, 1000, 501]
    assert [x for c in chunks for x in c] == items


def test_every_state_has_a_rucio_state() -> None:
    assert set(RUCIO_STATE) == set(ReplicaState)
    assert set(RUCIO_STATE.values()) <= {"A", "U", "C", "B", "D", "T"}
    assert RUCIO_STATE[ReplicaState.VALIDATED] == RUCIO_STATE[ReplicaState.ARCHIVED] == "A"
