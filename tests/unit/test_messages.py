"""The announcement contract: JSON decoding, the published schema, reason codes, status and dead-letter forms."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import jsonschema
import pytest

from rawflow.messages import (
    HEADER_REASON,
    HEADER_SHA256,
    Outcome,
    Reason,
    Rejection,
    announcement_payload,
    announcement_schema,
    dead_letter_headers,
    decode,
    parse_timestamp,
    status_payload,
    validate,
)
from rawflow.naming import DataType

NAME = "Daq.000123.Det.Physics.Raw.20251101123000.00001.dat"
GOOD = {
    "FileName": NAME,
    "FilePath": f"/eos/ihep/juno/raw/2025/1101/{NAME}",
    "Checksum": "0a1b2c3d",
    "Size": 1024,
    "Type": "RAW",
}


def rejection_of(obj: object) -> Reason:
    with pytest.raises(Rejection) as info:
        validate(obj)  # type: ignore[arg-type]
    return info.value.reason


def test_schema_is_valid_draft_2020_12_and_accepts_the_canonical_message() -> None:
    schema = announcement_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["required"]) == {"FileName", "FilePath", "Checksum", "Size", "Type"}
    validate(GOOD)
    validate({**GOOD, "Run": 123, "Stream": "Physics", "ReceivedAt": "2025-11-01T12:30:00Z", "Extra": [1]})


def test_decode_rejects_oversized_before_parsing() -> None:
    with pytest.raises(Rejection) as info:
        decode(b" " * 2001, max_bytes=2000)
    assert info.value.reason is Reason.MESSAGE_TOO_LARGE
    assert "2001 bytes" in info.value.text


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", Reason.BAD_JSON),
        (b"\xff\xfe garbage", Reason.BAD_JSON),
        (b"", Reason.BAD_JSON),
        (None, Reason.BAD_JSON),
        (b"[1, 2]", Reason.NOT_OBJECT),
        (b'"a string"', Reason.NOT_OBJECT),
        (b"null", Reason.NOT_OBJECT),
    ],
)
def test_decode_rejects_non_objects(raw: bytes | None, reason: Reason) -> None:
    with pytest.raises(Rejection) as info:
        decode(raw, max_bytes=1000)
    assert info.value.reason is reason


def test_decode_returns_the_object() -> None:
    assert decode(json.dumps(GOOD).encode(), max_bytes=1000) == GOOD


@pytest.mark.parametrize("field", ["FileName", "FilePath", "Checksum", "Size", "Type"])
def test_each_missing_field_is_named(field: str) -> None:
    obj = {k: v for k, v in GOOD.items() if k != field}
    with pytest.raises(Rejection) as info:
        validate(obj)
    assert info.value.reason is Reason.MISSING_FIELD
    assert field in info.value.text


@pytest.mark.parametrize(
    ("field", "value"),
    [("Size", "1024"), ("Size", 1.5), ("Size", True), ("FileName", 7), ("FilePath", None), ("Run", "12")],
)
def test_wrong_field_types(field: str, value: object) -> None:
    assert rejection_of({**GOOD, field: value}) is Reason.WRONG_FIELD_TYPE


def test_unknown_type_and_bad_checksum_have_their_own_codes() -> None:
    assert rejection_of({**GOOD, "Type": "ESD"}) is Reason.UNKNOWN_TYPE
    assert rejection_of({**GOOD, "Type": "raw"}) is Reason.UNKNOWN_TYPE  # the contract is upper-case
    assert rejection_of({**GOOD, "Checksum": "xyz"}) is Reason.BAD_CHECKSUM
    assert rejection_of({**GOOD, "Checksum": "123456789"}) is Reason.BAD_CHECKSUM
    assert rejection_of({**GOOD, "Checksum": ""}) is Reason.BAD_CHECKSUM
    assert rejection_of({**GOOD, "Run": -1}) is Reason.INVALID_FIELD


def test_the_reason_is_deterministic_when_several_things_are_wrong() -> None:
    obj = {"FileName": 1, "Type": "ESD"}
    assert rejection_of(obj) is Reason.MISSING_FIELD
    assert rejection_of(obj) is Reason.MISSING_FIELD


def test_reason_codes_are_stable_strings_and_criticality() -> None:
    assert Reason.CHECKSUM_MISMATCH.value == "checksum_mismatch"
    assert Reason("too_large") is Reason.TOO_LARGE
    assert Reason.CONFLICT.critical and Reason.CHECKSUM_MISMATCH.critical
    assert not Reason.BAD_JSON.critical and not Reason.ZERO_SIZE.critical


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-11-01T12:30:00Z", datetime(2025, 11, 1, 12, 30, tzinfo=UTC)),
        ("2025-11-01T12:30:00", datetime(2025, 11, 1, 12, 30, tzinfo=UTC)),
        ("2025-11-01T14:30:00+02:00", datetime(2025, 11, 1, 12, 30, tzinfo=UTC)),
        (1761999000, datetime(2025, 11, 1, 12, 10, tzinfo=UTC)),
    ],
)
def test_timestamps(value: object, expected: datetime) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize("value", ["yesterday", True, 1e300, [1]])
def test_bad_timestamps(value: object) -> None:
    with pytest.raises(Rejection) as info:
        parse_timestamp(value)
    assert info.value.reason is Reason.INVALID_FIELD


def test_announcement_payload_round_trips_through_the_schema() -> None:
    raw = announcement_payload(
        file_name=NAME,
        file_path=GOOD["FilePath"],  # type: ignore[arg-type]
        checksum="0a1b2c3d",
        size=1024,
        data_type=DataType.RAW,
        run=123,
        stream="Physics",
        received_at=datetime(2025, 11, 1, tzinfo=UTC),
    )
    obj = decode(raw, max_bytes=10_000)
    validate(obj)
    assert obj["Type"] == "RAW" and obj["Run"] == 123 and obj["ReceivedAt"].startswith("2025-11-01T00:00:00")


def test_status_and_dead_letter_forms() -> None:
    status = json.loads(
        status_payload(
            Outcome.REJECTED,
            source_topic="t",
            partition=2,
            offset=9,
            reason=Reason.ZERO_SIZE,
            text="Size is 0",
        )
    )
    assert status["status"] == "rejected" and status["reason"] == "zero_size" and status["offset"] == 9
    assert "lfn" not in status
    payload = b"\x00bad"
    headers = dict(dead_letter_headers(Reason.BAD_JSON, "x", source_topic="t", partition=0, offset=1, payload=payload))
    assert headers[HEADER_REASON] == b"bad_json"
    assert headers[HEADER_SHA256] == hashlib.sha256(payload).hexdigest().encode()
