"""The DataReceiver's checks: pure message checks, the Tier-0 storage check, and batch de-duplication.

Each failed check raises or returns a :class:`~rawflow.messages.Rejection` with a stable reason code.
Storage faults that may pass (site down, timeout) are never rejections: they surface as
:class:`~rawflow.errors.TransientError` so the batch is retried, not quarantined.
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rawflow.errors import InvalidNameError, StorageError, StorageNotFoundError, TransientError
from rawflow.messages import (
    Announcement,
    Reason,
    Rejection,
    decode,
    normalised_checksum,
    parse_timestamp,
    validate,
)
from rawflow.naming import DataType, RawFileName, RawFilePath, day_mismatch
from rawflow.sites import Site
from rawflow.storage.base import Storage

GB = 10**9
MB = 10**6


class StorageCheck(enum.StrEnum):
    """How much of each announced file the receiver verifies at the Tier-0."""

    FULL = "full"  # stat (exists, size) and the server-side adler32
    SIZE = "size"  # stat only: exists and size
    OFF = "off"  # trust the message (benchmarks only)


@dataclass(frozen=True, slots=True)
class Limits:
    max_file_size: int = 10 * GB
    max_message_bytes: int = 1 * MB
    # The Tier-0 path root every FilePath must sit under (e.g. "/eos/ihep"); None accepts any root.
    tier0_root: str | None = None
    storage_check: StorageCheck = StorageCheck.FULL
    # Concurrent stat+checksum calls. An xrootd server runs only a few checksum jobs at once unless
    # configured with `xrootd.chksum max N`, and answers the rest "Job resources currently not available,
    # wait 30 s": with 4-16 here against a default server, batches stalled for 30 s (measured; 2 never did).
    # The local grid's sites run `xrootd.chksum max 64`; 16 ran without stalls there (measured). Against a
    # server with the default limit use 2.
    storage_parallel: int = 16
    # The receiving day's time zone (IANA name): a file whose directory is not the receiving day of its FileTime
    # there is rejected (DAY_MISMATCH). None: not checked (pure message checks); the DataReceiver and the
    # reconciliation fill it from the site policy's ``timezone``.
    timezone: str | None = None


def tier0_root(site: Site) -> str:
    """The path part of a site's URL prefix, normalised: ``root://h:1094//eos/ihep`` → ``/eos/ihep``."""
    path = urlsplit(site.url_prefix).path
    normal = posixpath.normpath("/" + path.lstrip("/"))
    return "" if normal == "/" else normal


def check_message(raw: bytes | None, *, topic_type: DataType | None, limits: Limits) -> Announcement:
    """Every check that needs only the message bytes. Raises :class:`Rejection`."""
    obj = decode(raw, max_bytes=limits.max_message_bytes)
    validate(obj)
    return check_fields(obj, topic_type=topic_type, limits=limits)


def check_fields(obj: dict[str, Any], *, topic_type: DataType | None, limits: Limits) -> Announcement:
    """Semantic checks on a schema-valid object."""
    data_type = DataType(obj["Type"])
    if topic_type is not None and data_type is not topic_type:
        raise Rejection(Reason.TYPE_TOPIC_MISMATCH, f"Type {data_type.value} announced on the {topic_type.value} topic")
    checksum = normalised_checksum(obj["Checksum"])
    size = check_size(int(obj["Size"]), limits)  # the schema admits 5.0 as an integer
    file_name, file_path = obj["FileName"], obj["FilePath"]
    path = _parse_name_and_path(file_name, file_path)
    if path.data_type is not data_type:
        raise Rejection(
            Reason.TYPE_PATH_MISMATCH, f"Type {data_type.value} but FilePath is in {path.data_type.directory}/"
        )
    if limits.tier0_root is not None and path.root != limits.tier0_root:
        raise Rejection(Reason.WRONG_ROOT, f"FilePath {file_path!r} is not under the Tier-0 root {limits.tier0_root!r}")
    run = obj.get("Run")
    if run is not None and run != path.file.run_number:
        raise Rejection(Reason.RUN_MISMATCH, f"Run {run} but the file name says run {path.file.run_number}")
    if limits.timezone is not None:
        check_day(path, limits.timezone)
    stamp = obj.get("ReceivedAt", obj.get("Timestamp"))
    return Announcement(
        file_name=file_name,
        file_path=file_path,
        checksum=checksum,
        size=size,
        data_type=data_type,
        path=path,
        run=path.file.run_number,
        stream=obj.get("Stream") or path.file.stream_name,
        received_at=parse_timestamp(stamp) if stamp is not None else None,
    )


def _parse_name_and_path(file_name: str, file_path: str) -> RawFilePath:
    """BAD_NAME for a bad FileName, BAD_PATH for a bad FilePath, NAME_PATH_MISMATCH when they disagree.
    The usual case (FileName is the path's basename) parses the name only once."""
    if file_path.rsplit("/", 1)[-1] == file_name:
        try:
            return RawFilePath.parse(file_path)
        except InvalidNameError as path_error:
            try:
                RawFileName.parse(file_name)
            except InvalidNameError as name_error:
                raise Rejection(Reason.BAD_NAME, str(name_error)) from None
            raise Rejection(Reason.BAD_PATH, str(path_error)) from None
    try:
        RawFileName.parse(file_name)
    except InvalidNameError as exc:
        raise Rejection(Reason.BAD_NAME, str(exc)) from None
    try:
        RawFilePath.parse(file_path)
    except InvalidNameError as exc:
        raise Rejection(Reason.BAD_PATH, str(exc)) from None
    raise Rejection(
        Reason.NAME_PATH_MISMATCH, f"FileName {file_name!r} is not the last component of FilePath {file_path!r}"
    )


def check_day(path: RawFilePath, timezone: str) -> RawFilePath:
    """DAY_MISMATCH when ``path``'s directory is not the receiving day of its FileTime in ``timezone``."""
    why = day_mismatch(path, timezone)
    if why is not None:
        raise Rejection(Reason.DAY_MISMATCH, why, lfn=path.lfn)
    return path


def check_size(size: int, limits: Limits) -> int:
    if size < 0:
        raise Rejection(Reason.NEGATIVE_SIZE, f"Size {size} is negative")
    if size == 0:
        raise Rejection(Reason.ZERO_SIZE, "Size is 0: an empty raw file is never valid")
    if size > limits.max_file_size:
        raise Rejection(Reason.TOO_LARGE, f"Size {size} bytes is above the limit of {limits.max_file_size}")
    return size


@dataclass(frozen=True, slots=True)
class Tier0Facts:
    """What the Tier-0 storage element says about one LFN."""

    lfn: str
    url: str
    exists: bool
    size: int | None = None
    adler32: str | None = None
    error: str | None = None  # set when the storage failed transiently for this file

    @property
    def transient(self) -> bool:
        return self.error is not None


def tier0_facts(
    storage: Storage,
    site: Site,
    lfns: Iterable[str],
    *,
    mode: StorageCheck,
    parallel: int = 2,
    executor: Executor | None = None,
) -> dict[str, Tier0Facts]:
    """Stat (and checksum, in FULL mode) every LFN at the Tier-0, ``parallel`` at a time.

    ``executor`` is a long-lived pool to run the checks on (a daemon keeps one: storage clients keep
    per-thread sessions, and new threads per batch would open new ones every time).
    Never raises for one file: a missing file is ``exists=False``, a transient fault sets ``error``.
    """
    unique = list(dict.fromkeys(lfns))
    if mode is StorageCheck.OFF or not unique:
        return {}

    def one(lfn: str) -> Tier0Facts:
        url = site.pfn(lfn)
        try:
            stat = storage.stat(url)
            if stat.is_dir:
                return Tier0Facts(lfn, url, exists=False)
            adler = storage.checksum(url, "adler32") if mode is StorageCheck.FULL else None
            return Tier0Facts(lfn, url, exists=True, size=stat.size, adler32=adler)
        except StorageNotFoundError:
            return Tier0Facts(lfn, url, exists=False)
        except (StorageError, TransientError, OSError) as exc:
            # A permanent storage error other than "not found" (e.g. permission) is still not the
            # message's fault: retrying after an operator fixes the site is the right outcome.
            return Tier0Facts(lfn, url, exists=False, error=f"{type(exc).__name__}: {exc}")

    if executor is not None:
        return dict(zip(unique, executor.map(one, unique), strict=True))
    if len(unique) == 1 or parallel <= 1:
        return {lfn: one(lfn) for lfn in unique}
    with ThreadPoolExecutor(max_workers=min(parallel, len(unique)), thread_name_prefix="tier0-check") as pool:
        return dict(zip(unique, pool.map(one, unique), strict=True))


def compare_with_tier0(announcement: Announcement, facts: Tier0Facts) -> Rejection | None:
    """The message against the Tier-0's own answer (facts must not be transient)."""
    if not facts.exists:
        return Rejection(Reason.ABSENT_AT_TIER0, f"{facts.url} does not exist at the Tier-0")
    if facts.size is not None and facts.size != announcement.size:
        return Rejection(
            Reason.SIZE_MISMATCH,
            f"{facts.url}: announced Size {announcement.size} but the Tier-0 has {facts.size} bytes",
        )
    if facts.adler32 is not None and facts.adler32 != announcement.checksum:
        return Rejection(
            Reason.CHECKSUM_MISMATCH,
            f"{facts.url}: announced adler32 {announcement.checksum} but the Tier-0 has {facts.adler32}",
        )
    return None


class BatchVerdict(enum.StrEnum):
    FIRST = "first"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


def dedupe(announcements: Sequence[Announcement]) -> list[tuple[BatchVerdict, Rejection | None]]:
    """Within one batch: the first announcement of an LFN wins; later equal ones are duplicates,
    later different ones (checksum or size) are conflicts. One verdict per input, in order."""
    first: dict[str, Announcement] = {}
    verdicts: list[tuple[BatchVerdict, Rejection | None]] = []
    for a in announcements:
        seen = first.get(a.lfn)
        if seen is None:
            first[a.lfn] = a
            verdicts.append((BatchVerdict.FIRST, None))
        elif seen.identity == a.identity:
            verdicts.append((BatchVerdict.DUPLICATE, None))
        else:
            verdicts.append(
                (
                    BatchVerdict.CONFLICT,
                    Rejection(
                        Reason.CONFLICT,
                        f"{a.lfn} announced twice in one batch: adler32 {seen.checksum}/size {seen.size}, "
                        f"then adler32 {a.checksum}/size {a.size}",
                    ),
                )
            )
    return verdicts
