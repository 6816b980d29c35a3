"""The announcement message contract: JSON decoding, schema validation, reason codes, status and dead-letter forms.

An announcement says one raw file landed at the Tier-0::

    {"FileName": "...dat", "FilePath": "/eos/ihep/juno/raw/2025/1101/...dat",
     "Checksum": "1a2b3c4d", "Size": 123, "Type": "RAW", "Run": 1, "Stream": "...", "ReceivedAt": "..."}

The JSON Schema in ``schemas/announcement.schema.json`` is the published contract; every structural
violation maps to one stable :class:`Reason` code, so operators and the quarantine table can count them.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jsonschema

from rawflow.checksum import normalise_adler32
from rawflow.naming import DataType, RawFilePath, block_name

SCHEMA_RESOURCE = "schemas/announcement.schema.json"
REQUIRED_FIELDS = ("FileName", "FilePath", "Checksum", "Size", "Type")


class Reason(enum.StrEnum):
    """Why a message was rejected. The values are stable: they are stored, counted and put in headers."""

    MESSAGE_TOO_LARGE = "message_too_large"
    BAD_JSON = "bad_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    WRONG_FIELD_TYPE = "wrong_field_type"
    INVALID_FIELD = "invalid_field"
    UNKNOWN_TYPE = "unknown_type"
    TYPE_TOPIC_MISMATCH = "type_topic_mismatch"
    BAD_CHECKSUM = "bad_checksum"
    BAD_NAME = "bad_name"
    BAD_PATH = "bad_path"
    NAME_PATH_MISMATCH = "name_path_mismatch"
    TYPE_PATH_MISMATCH = "type_path_mismatch"
    WRONG_ROOT = "wrong_root"
    RUN_MISMATCH = "run_mismatch"
    DAY_MISMATCH = "day_mismatch"  # the directory is not the receiving day of the FileTime (see naming.day_mismatch)
    ZERO_SIZE = "zero_size"
    NEGATIVE_SIZE = "negative_size"
    TOO_LARGE = "too_large"
    ABSENT_AT_TIER0 = "absent_at_tier0"
    SIZE_MISMATCH = "size_mismatch"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    CONFLICT = "conflict"
    BLOCK_CLOSED = "block_closed"

    @property
    def critical(self) -> bool:
        """Problems an operator must hear about at once (by email), not only find in the quarantine."""
        return self in _CRITICAL


# DAY_MISMATCH: the DAQ's day boundary and the configured zone disagree (a whole part of every day is held
# back until someone fixes one of them), or a file was filed by hand into another day's directory.
_CRITICAL = frozenset(
    {Reason.CONFLICT, Reason.CHECKSUM_MISMATCH, Reason.SIZE_MISMATCH, Reason.BLOCK_CLOSED, Reason.DAY_MISMATCH}
)


class Rejection(Exception):
    """A message that fails a check: a stable reason code and a text that names the field and value."""

    def __init__(self, reason: Reason, text: str, *, lfn: str | None = None) -> None:
        self.reason = reason
        self.text = text
        # The file's LFN when the check got that far (e.g. DAY_MISMATCH): kept with the quarantined message.
        self.lfn = lfn
        super().__init__(f"{reason.value}: {text}")


@functools.cache
def announcement_schema() -> dict[str, Any]:
    """The published JSON Schema (read once, on first use)."""
    text = resources.files("rawflow").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    schema = announcement_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def decode(raw: bytes | None, *, max_bytes: int) -> dict[str, Any]:
    """Bytes → a JSON object, or :class:`Rejection` (too large, not JSON, not an object)."""
    if raw is None:
        raise Rejection(Reason.BAD_JSON, "empty message (no value)")
    if len(raw) > max_bytes:
        raise Rejection(Reason.MESSAGE_TOO_LARGE, f"message is {len(raw)} bytes, the limit is {max_bytes}")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Rejection(Reason.BAD_JSON, f"not valid UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Rejection(Reason.NOT_OBJECT, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def validate(obj: Mapping[str, Any]) -> None:
    """Check ``obj`` against the schema; the first violation (in a fixed order) becomes a :class:`Rejection`."""
    errors = list(_validator().iter_errors(obj))
    if not errors:
        return
    # Deterministic choice: missing fields first, then by field name, so a message always gets the same reason.
    error = min(errors, key=lambda e: (e.validator != "required", [str(p) for p in e.absolute_path]))
    raise _rejection_for(error)


def _rejection_for(error: jsonschema.ValidationError) -> Rejection:
    path = [str(p) for p in error.absolute_path]
    field = path[0] if path else ""
    if error.validator == "required":
        present = set(error.instance) if isinstance(error.instance, dict) else set()
        missing = sorted(set(REQUIRED_FIELDS) - present)
        return Rejection(Reason.MISSING_FIELD, f"missing required field(s): {', '.join(missing)}")
    if error.validator == "type":
        expected = error.validator_value
        return Rejection(
            Reason.WRONG_FIELD_TYPE,
            f"field {field} must be {expected}, got {type(error.instance).__name__} {_short(error.instance)}",
        )
    if field == "Type" and error.validator == "enum":
        return Rejection(Reason.UNKNOWN_TYPE, f"Type {_short(error.instance)} is not one of RAW, RTRAW")
    if field == "Checksum":
        return Rejection(Reason.BAD_CHECKSUM, f"Checksum {_short(error.instance)} is not adler32 hex (1-8 digits)")
    return Rejection(Reason.INVALID_FIELD, f"field {field}: {error.message}")


@dataclass(frozen=True, slots=True)
class Announcement:
    """A structurally valid announcement; :mod:`rawflow.checks` decides whether the file is acceptable."""

    file_name: str
    file_path: str
    checksum: str
    size: int
    data_type: DataType
    path: RawFilePath
    run: int | None = None
    stream: str = ""
    received_at: datetime | None = None
    # Derived from ``path`` once (they are looked up many times per message).
    lfn: str = field(init=False)
    block_id: str = field(init=False)
    block: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lfn", self.path.lfn)
        object.__setattr__(self, "block_id", self.path.block_id)
        object.__setattr__(self, "block", block_name(self.data_type, self.block_id))

    @property
    def identity(self) -> tuple[str, str, int]:
        """What makes two announcements of the same LFN the same file."""
        return (self.lfn, self.checksum, self.size)


def announcement_payload(
    *,
    file_name: str,
    file_path: str,
    checksum: str,
    size: int,
    data_type: DataType,
    run: int | None = None,
    stream: str | None = None,
    received_at: datetime | None = None,
) -> bytes:
    """The wire form the announcer (and the online system) publishes."""
    body: dict[str, Any] = {
        "FileName": file_name,
        "FilePath": file_path,
        "Checksum": checksum,
        "Size": size,
        "Type": data_type.value,
    }
    if run is not None:
        body["Run"] = run
    if stream is not None:
        body["Stream"] = stream
    if received_at is not None:
        body["ReceivedAt"] = received_at.astimezone(UTC).isoformat()
    return json.dumps(body, separators=(",", ":")).encode()


def parse_timestamp(value: object) -> datetime:
    """ISO 8601 text (naive = UTC) or seconds since the epoch → an aware UTC datetime."""
    if isinstance(value, bool):
        raise Rejection(Reason.INVALID_FIELD, f"ReceivedAt {_short(value)} is not a time")
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise Rejection(Reason.INVALID_FIELD, f"ReceivedAt {_short(value)} is out of range") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise Rejection(Reason.INVALID_FIELD, f"ReceivedAt {_short(value)} is not ISO 8601") from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise Rejection(Reason.INVALID_FIELD, f"ReceivedAt {_short(value)} is not a time")


def normalised_checksum(value: str) -> str:
    try:
        return normalise_adler32(value)
    except ValueError as exc:
        raise Rejection(Reason.BAD_CHECKSUM, str(exc)) from None


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


def status_payload(
    outcome: Outcome,
    *,
    source_topic: str,
    partition: int,
    offset: int,
    lfn: str | None = None,
    block: str | None = None,
    reason: Reason | None = None,
    text: str | None = None,
    at: datetime | None = None,
) -> bytes:
    """The status-topic message sent back for every announcement (the DataReceiver's answer to the online side)."""
    body: dict[str, Any] = {
        "status": outcome.value,
        "topic": source_topic,
        "partition": partition,
        "offset": offset,
        "at": (at or datetime.now(UTC)).isoformat(),
    }
    if lfn is not None:
        body["lfn"] = lfn
    if block is not None:
        body["block"] = block
    if reason is not None:
        body["reason"] = reason.value
    if text is not None:
        body["text"] = text
    return json.dumps(body, separators=(",", ":")).encode()


HEADER_REASON = "rawflow-reason"
HEADER_TEXT = "rawflow-reason-text"
HEADER_TOPIC = "rawflow-source-topic"
HEADER_PARTITION = "rawflow-source-partition"
HEADER_OFFSET = "rawflow-source-offset"
HEADER_SHA256 = "rawflow-payload-sha256"


def dead_letter_headers(
    reason: Reason, text: str, *, source_topic: str, partition: int, offset: int, payload: bytes | None
) -> list[tuple[str, str | bytes | None]]:
    """Headers that travel with the original bytes on the dead-letter topic."""
    return [
        (HEADER_REASON, reason.value.encode()),
        (HEADER_TEXT, text.encode("utf-8", "replace")[:1000]),
        (HEADER_TOPIC, source_topic.encode()),
        (HEADER_PARTITION, str(partition).encode()),
        (HEADER_OFFSET, str(offset).encode()),
        (HEADER_SHA256, hashlib.sha256(payload or b"").hexdigest().encode()),
    ]
