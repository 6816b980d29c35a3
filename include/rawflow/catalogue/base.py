"""The catalogue interface: files → daily blocks → monthly datasets, replicas per site and their states.

Every backend (``sql``, ``rucio``) implements :class:`Catalogue` and passes the same contract test suite
(tests/integration/catalogue_contract.py). Shared validation and grouping live here so backends agree.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar, runtime_checkable

from rawflow.errors import InvalidNameError, PermanentError
from rawflow.naming import EXPERIMENT, TYPE_DIRECTORIES, DataType, block_name, dataset_name, parse_block_id

METADATA_KEYS = ("Block", "Type", "Run", "Stream")
"""The keys ``query_files`` understands: the receiving day, the data type, the run number and the stream."""


class ReplicaState(enum.StrEnum):
    REGISTERED = "registered"  # known at the site, not yet checked
    COPYING = "copying"  # a transfer to the site is under way
    VALIDATED = "validated"  # size and adler32 checked at the site
    BAD = "bad"  # missing or corrupt at the site
    ARCHIVED = "archived"  # safe on tape


class BlockClosedError(PermanentError):
    """New files offered to a block that is already closed."""

    def __init__(self, block: str) -> None:
        self.block = block
        super().__init__(f"block {block} is closed: it takes no new files")


class UnknownParentError(PermanentError):
    """Lineage naming a parent the catalogue does not hold."""

    def __init__(self, child: str, parent: str) -> None:
        self.child = child
        self.parent = parent
        super().__init__(f"lineage of {child!r}: parent {parent!r} is not in the catalogue")


class UnknownMetadataKeyError(PermanentError, ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"unknown metadata key {key!r}; known: {', '.join(METADATA_KEYS)}")


@dataclass(frozen=True, slots=True)
class FileRecord:
    lfn: str
    size: int
    adler32: str
    data_type: DataType
    block_id: str
    run_number: int
    stream: str
    received_at: datetime  # tz-aware UTC

    @property
    def block(self) -> str:
        return block_name(self.data_type, self.block_id)

    @property
    def dataset(self) -> str:
        return dataset_name(self.data_type, self.block_id)

    def metadata(self) -> dict[str, str | int]:
        return {"Block": self.block_id, "Type": self.data_type.value, "Run": self.run_number, "Stream": self.stream}


@dataclass(slots=True)
class RegisterResult:
    added: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    conflicts: list[tuple[str, str, str]] = field(default_factory=list)  # (lfn, catalogue adler32, offered adler32)


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    state: ReplicaState
    error: str | None
    updated_at: datetime  # tz-aware UTC
    attempts: int = 0  # how many times the replica entered COPYING


@dataclass(frozen=True, slots=True)
class BlockRecord:
    data_type: DataType
    block_id: str
    is_open: bool
    files: int
    bytes: int
    created_at: datetime
    closed_at: datetime | None

    @property
    def name(self) -> str:
        return block_name(self.data_type, self.block_id)

    @property
    def dataset(self) -> str:
        return dataset_name(self.data_type, self.block_id)


@runtime_checkable
class Catalogue(Protocol):
    """What rawflow needs of a file catalogue. LFNs are the keys; sites are storage element names."""

    max_lfn_length: int

    def register_files(
        self,
        files: Sequence[FileRecord],
        *,
        site: str,
        state: ReplicaState = ReplicaState.VALIDATED,
        parents: Mapping[str, Sequence[str]] | None = None,
    ) -> RegisterResult:
        """Bulk, idempotent: add new files to their (created on the fly) block and dataset, with metadata
        {Block, Type, Run, Stream}, and ensure a replica at ``site`` (new replicas get ``state``; existing ones
        keep theirs). Same LFN and checksum → ``existing``; another checksum → ``conflicts``, never overwritten.
        Raises :class:`BlockClosedError` before writing if a new file belongs to a closed block.

        ``parents`` (child LFN → the LFNs it was made from, e.g. RTRAW → [RAW]) records lineage in the same call
        for the added and existing children (not for conflicts). Parents must be catalogued files of the child's
        receiving day (:func:`validate_lineage`); an unknown parent raises :class:`UnknownParentError` before
        anything is written."""
        ...

    def children(self, lfns: Iterable[str], data_type: DataType | None = None) -> dict[str, list[str]]:
        """parent LFN → its children's LFNs (sorted), only of ``data_type`` if given; parents without any are
        left out."""
        ...

    def parents(self, lfns: Iterable[str]) -> dict[str, list[str]]:
        """child LFN → its parents' LFNs (sorted); files without parents are left out."""
        ...

    def files_without_children(self, data_type: DataType, block_id: str, child_type: DataType) -> list[FileRecord]:
        """The files of block ``data_type``-``block_id`` that have no child of ``child_type`` (sorted by LFN):
        e.g. the RAW files of a day still to convert to RTRAW. One query, whatever the block's size."""
        ...

    def get_file(self, lfn: str) -> FileRecord | None: ...

    def get_files(self, lfns: Iterable[str]) -> dict[str, FileRecord]: ...

    def files_in_block(self, data_type: DataType, block_id: str) -> list[FileRecord]:
        """The block's files, sorted by LFN."""
        ...

    def query_files(self, **metadata: str | int) -> list[str]:
        """LFNs (sorted) whose metadata equals every given key, e.g. ``query_files(Block="20251101", Type="RAW")``."""
        ...

    def set_replica_state(
        self, lfns: Iterable[str], site: str, state: ReplicaState, *, error: str | None = None
    ) -> int:
        """Upsert the replicas of known files at ``site``; returns how many were created or changed.
        Unknown LFNs are ignored. Entering COPYING counts an attempt."""
        ...

    def replica_states(
        self,
        lfns: Iterable[str] | None = None,
        *,
        block: tuple[DataType, str] | None = None,
        site: str | None = None,
    ) -> dict[str, dict[str, ReplicaInfo]]:
        """lfn → site → replica info, for the given LFNs or every file of ``block``; only ``site`` if given."""
        ...

    def block_summary(self, data_type: DataType, block_id: str) -> dict[str, dict[ReplicaState, int]]:
        """site → state → number of the block's replicas in that state (states with no replica omitted)."""
        ...

    def get_block(self, data_type: DataType, block_id: str) -> BlockRecord | None: ...

    def list_blocks(self, data_type: DataType | None = None, *, is_open: bool | None = None) -> list[BlockRecord]:
        """Blocks sorted by name, optionally of one type and/or open state."""
        ...

    def close_block(self, data_type: DataType, block_id: str) -> bool:
        """Close the block (no new files). True if it was open; False if already closed. Unknown → PermanentError."""
        ...

    def datasets(self, data_type: DataType | None = None) -> list[str]:
        """Dataset names (e.g. ``RAW-202511``), sorted."""
        ...

    def blocks_in_dataset(self, dataset: str) -> list[str]:
        """Block names (e.g. ``RAW-20251101``) attached to the dataset, sorted."""
        ...

    def close(self) -> None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes from databases are UTC by convention; aware ones are converted."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# The catalogue checks an LFN's shape and that it lies in the record's block; the full naming-scheme check
# (seven fields, valid dates) is the receiver's, and would cost more than the database insert here.
# A user analysis's outputs live in the user's area: /juno/user/<user>/<analysis>/<type>/YYYY/mmdd/<file>.
_LFN_SHAPE = re.compile(
    rf"/{EXPERIMENT}/(?:user/(?P<user>[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}})/(?P<analysis>[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}})/)?"
    rf"(?P<dir>{TYPE_DIRECTORIES})/(?P<year>[0-9]{{4}})/(?P<mmdd>[0-9]{{4}})/"
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,254})"
)

_ADLER32 = re.compile(r"[0-9a-f]{8}")


def validate_files(files: Sequence[FileRecord], max_lfn_length: int) -> None:
    """Reject, before any write, a record whose LFN is malformed or lies outside the record's block."""
    checked_blocks: set[str] = set()
    for record in files:
        match = _LFN_SHAPE.fullmatch(record.lfn)
        if match is None:
            raise InvalidNameError(
                "LFN",
                record.lfn,
                f"expected /{EXPERIMENT}/[user/<user>/<analysis>/]<{TYPE_DIRECTORIES}>/YYYY/mmdd/<file name>",
            )
        if len(record.lfn) > max_lfn_length:
            raise InvalidNameError("LFN", record.lfn, f"longer than this catalogue's limit of {max_lfn_length}")
        if record.block_id not in checked_blocks:
            parse_block_id(record.block_id)
            checked_blocks.add(record.block_id)
        data_type = DataType.parse(record.data_type)
        if (
            match["dir"] != data_type.directory
            or match["year"] + match["mmdd"] != record.block_id
            or not match["name"].endswith(data_type.extension)
        ):
            raise InvalidNameError("LFN", record.lfn, f"lies outside block {record.block}")
        if record.size < 0:
            raise InvalidNameError("size", record.size, f"negative size for {record.lfn}")
        if not _ADLER32.fullmatch(record.adler32):
            raise InvalidNameError("adler32", record.adler32, f"expected 8 lower-case hex digits for {record.lfn}")
        if record.received_at.tzinfo is None:
            raise InvalidNameError("received_at", record.received_at, f"must be timezone-aware for {record.lfn}")


def validate_lineage(files: Sequence[FileRecord], parents: Mapping[str, Sequence[str]] | None) -> list[tuple[str, str]]:
    """Check ``parents`` (child → parents) against the offered files and return the (parent, child) links,
    sorted. A child must be one of ``files``; a parent a well-formed LFN of the same receiving day (processing
    keeps a file's day, so lineage queries stay inside one block's day)."""
    if not parents:
        return []
    offered = {record.lfn: record for record in files}
    links: set[tuple[str, str]] = set()
    for child, its_parents in parents.items():
        record = offered.get(child)
        if record is None:
            raise InvalidNameError("parents", child, "lineage for a file that is not being registered")
        if isinstance(its_parents, str) or not its_parents:
            raise InvalidNameError("parents", its_parents, f"expected a non-empty list of parent LFNs for {child}")
        for parent in its_parents:
            match = _LFN_SHAPE.fullmatch(parent) if isinstance(parent, str) else None
            if match is None:
                raise InvalidNameError("parents", parent, f"not an LFN (parent of {child})")
            if parent == child:
                raise InvalidNameError("parents", parent, "a file cannot be its own parent")
            if match["year"] + match["mmdd"] != record.block_id:
                raise InvalidNameError("parents", parent, f"not of {child}'s day {record.block_id}")
            links.add((parent, child))
    return sorted(links)


def parse_block_name(name: str) -> tuple[DataType, str]:
    """``RAW-20251101`` → (DataType.RAW, "20251101")."""
    kind, _, block_id = name.partition("-")
    data_type = DataType.parse(kind)
    parse_block_id(block_id)
    return data_type, block_id


def check_metadata_keys(metadata: dict[str, str | int]) -> None:
    for key in metadata:
        if key not in METADATA_KEYS:
            raise UnknownMetadataKeyError(key)


_T = TypeVar("_T")


def chunked(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def split_repeats(files: Sequence[FileRecord]) -> tuple[list[FileRecord], list[tuple[str, str, str]]]:
    """One record per LFN (the first wins). A repeat with another checksum in the same call is a conflict
    with the first: (lfn, first adler32, repeated adler32); a plain repeat is dropped."""
    seen: dict[str, FileRecord] = {}
    conflicts: list[tuple[str, str, str]] = []
    for record in files:
        first = seen.setdefault(record.lfn, record)
        if first.adler32 != record.adler32:
            conflicts.append((record.lfn, first.adler32, record.adler32))
    return list(seen.values()), conflicts
