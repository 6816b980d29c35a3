"""The raw-data naming scheme: file names, paths, logical file names and block ids.

File name: ``Daq.RunNumber.StreamType.StreamName.FileTag.FileTime.FileSequence.dat``
Directory: ``/<root>/juno/raw/YYYY/mmdd/<file>`` (RAW), ``/<root>/juno/rtraw/YYYY/mmdd/<file>`` (RTRAW) and
``/<root>/juno/esd/YYYY/mmdd/<file>`` (ESD). Processing derives a RAW file's RTRAW and ESD names from its stem
(:func:`derived_lfn`): the same day directory, the same seven fields, another extension. Monte Carlo production
(a campaign of kind ``mc``) adds its own types, each in its own directory: DETSIM (``.detsim``, simulated
photo-electrons with the generator's truth), ELECSIM (``.elecsim``, the electronics readout) and CALIB
(``.calib``, calibrated PMT hits); its reconstruction writes ESD.

The logical file name (LFN) is the path from ``/juno/`` on, the same at every site; a site's physical
URL is its URL prefix followed by the LFN. The block id is the receiving day, ``YYYYMMDD``, taken from
the ``YYYY/mmdd`` directories the file landed in at the Tier-0. The DAQ writes into the directory of its local
day, so a receiving day is a calendar day in the experiment's time zone (``timezone`` in config/sites.yaml; JUNO's
day boundary is Beijing time, Asia/Shanghai; default UTC): :func:`receiving_day` and :func:`receiving_day_bounds`
convert between instants and days, and everything that cuts time into blocks (the block DAG's timetable, the
block's close time, the view, the CLI) uses them with that zone.

The DAQ names both the file and its directory when it opens the file: ``FileTime`` is the file's start time in
UTC (the RAW header's ``start_time_ns`` is the same instant), and the directory is the receiving day of that
instant in the experiment's zone. With Asia/Shanghai, a file started at 2026-11-23 15:59:59 UTC (23:59:59 in
Beijing) is ``…20261123155959…`` in ``2026/1123``; one started a second later is ``…20261123160000…`` in
``2026/1124``. :func:`day_mismatch` says when a path breaks that rule (the DAQ's day boundary and the configured
zone disagree, or the file was filed by hand): the DataReceiver and the reconciliation quarantine such a file
(reason ``day_mismatch``) instead of putting it into a block whose day does not contain it.
"""

from __future__ import annotations

import enum
import posixpath
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rawflow.errors import InvalidNameError

EXPERIMENT = "juno"
MAX_NAME_LENGTH = 255


class DataType(enum.StrEnum):
    RAW = "RAW"
    RTRAW = "RTRAW"
    ESD = "ESD"  # reconstructed events (keep-up processing output)
    DETSIM = "DETSIM"  # Monte Carlo: generated events and their simulated photo-electrons (detsim)
    ELECSIM = "ELECSIM"  # Monte Carlo: the electronics readout of simulated events (elecsim)
    CALIB = "CALIB"  # Monte Carlo: calibrated PMT hits (cal), read by rec like RTRAW

    @property
    def directory(self) -> str:
        return self.value.lower()

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self]

    @classmethod
    def parse(cls, value: object) -> DataType:
        if isinstance(value, DataType):
            return value
        if isinstance(value, str):
            try:
                return cls(value.upper())
            except ValueError:
                pass
        raise InvalidNameError("Type", value, f"must be one of {', '.join(t.value for t in cls)}")


_EXTENSIONS = {
    DataType.RAW: ".dat",
    DataType.RTRAW: ".rtraw",
    DataType.ESD: ".esd",
    DataType.DETSIM: ".detsim",
    DataType.ELECSIM: ".elecsim",
    DataType.CALIB: ".calib",
}
_KNOWN_EXTENSIONS = ", ".join(f"{ext} ({t.value})" for t, ext in _EXTENSIONS.items())
TYPE_DIRECTORIES = "|".join(t.directory for t in DataType)
"""The data directories of an LFN, ``raw|rtraw|esd|detsim|elecsim|calib`` (for patterns and messages)."""

DERIVATION: dict[DataType, DataType] = {DataType.RTRAW: DataType.RAW, DataType.ESD: DataType.RTRAW}
"""The processing chain: each derived type and the type it is made from (RAW → RTRAW → ESD)."""

_TOKEN = r"[A-Za-z0-9][A-Za-z0-9_-]*"
_FIELD_PATTERNS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("Daq", re.compile(_TOKEN), "letters, digits, '_' or '-'"),
    ("RunNumber", re.compile(r"[0-9]{1,10}"), "1 to 10 digits"),
    ("StreamType", re.compile(_TOKEN), "letters, digits, '_' or '-'"),
    ("StreamName", re.compile(_TOKEN), "letters, digits, '_' or '-'"),
    ("FileTag", re.compile(_TOKEN), "letters, digits, '_' or '-'"),
    ("FileTime", re.compile(r"[0-9]{14}"), "YYYYMMDDhhmmss"),
    ("FileSequence", re.compile(r"[0-9]{1,8}"), "1 to 8 digits"),
)


@dataclass(frozen=True, slots=True)
class RawFileName:
    """A parsed raw file name."""

    daq: str
    run_number: int
    stream_type: str
    stream_name: str
    file_tag: str
    file_time: datetime
    file_sequence: int
    data_type: DataType
    name: str

    @classmethod
    def parse(cls, name: str) -> RawFileName:
        if not isinstance(name, str) or not name:
            raise InvalidNameError("FileName", name, "must be a non-empty string")
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidNameError("FileName", name[:40] + "…", f"longer than {MAX_NAME_LENGTH} characters")
        if "/" in name or "\\" in name or "\x00" in name:
            raise InvalidNameError("FileName", name, "must not contain '/', '\\' or NUL")
        for data_type in DataType:
            if name.endswith(data_type.extension):
                stem = name[: -len(data_type.extension)]
                break
        else:
            raise InvalidNameError("FileName", name, f"must end with one of {_KNOWN_EXTENSIONS}")
        fields = stem.split(".")
        if len(fields) != len(_FIELD_PATTERNS):
            raise InvalidNameError(
                "FileName",
                name,
                f"has {len(fields)} dot-separated fields, expected 7: "
                "Daq.RunNumber.StreamType.StreamName.FileTag.FileTime.FileSequence",
            )
        for value, (field, pattern, expected) in zip(fields, _FIELD_PATTERNS, strict=True):
            if not pattern.fullmatch(value):
                raise InvalidNameError(field, value, f"expected {expected} (in file name {name!r})")
        try:
            file_time = datetime.strptime(fields[5], "%Y%m%d%H%M%S")
        except ValueError:
            raise InvalidNameError("FileTime", fields[5], f"not a valid date-time (in file name {name!r})") from None
        return cls(
            daq=fields[0],
            run_number=int(fields[1]),
            stream_type=fields[2],
            stream_name=fields[3],
            file_tag=fields[4],
            file_time=file_time,
            file_sequence=int(fields[6]),
            data_type=data_type,
            name=name,
        )

    @classmethod
    def build(
        cls,
        *,
        daq: str,
        run_number: int,
        stream_type: str,
        stream_name: str,
        file_tag: str,
        file_time: datetime,
        file_sequence: int,
        data_type: DataType = DataType.RAW,
    ) -> RawFileName:
        name = (
            f"{daq}.{run_number:06d}.{stream_type}.{stream_name}.{file_tag}."
            f"{file_time:%Y%m%d%H%M%S}.{file_sequence:05d}{data_type.extension}"
        )
        return cls.parse(name)


def block_id_for(day: date) -> str:
    """The block id of a receiving day."""
    return f"{day:%Y%m%d}"


def day_zone(timezone: str | tzinfo) -> tzinfo:
    """The time zone of receiving days: an IANA name (``Asia/Shanghai``, ``UTC``) or a tzinfo."""
    if not isinstance(timezone, str):
        return timezone
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidNameError(
            "TimeZone", timezone, "not an IANA time zone name such as UTC or Asia/Shanghai"
        ) from None


def receiving_day(instant: datetime, timezone: str | tzinfo = "UTC") -> date:
    """The receiving day an instant falls in (a naive instant is taken as UTC)."""
    aware = instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)
    return aware.astimezone(day_zone(timezone)).date()


def receiving_day_bounds(block_id: str, timezone: str | tzinfo = "UTC") -> tuple[datetime, datetime]:
    """[start, end) of a block's receiving day as UTC instants (23 or 25 hours long on a DST change)."""
    day = parse_block_id(block_id)
    zone = day_zone(timezone)
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def file_receiving_day(file: RawFileName, timezone: str | tzinfo = "UTC") -> date:
    """The receiving day a file belongs to by its ``FileTime`` (its start time, UTC) in ``timezone``."""
    return receiving_day(file.file_time, timezone)


def day_mismatch(path: RawFilePath, timezone: str | tzinfo = "UTC") -> str | None:
    """Why ``path``'s ``YYYY/mmdd`` directory is not the receiving day of its ``FileTime`` in ``timezone``, in one
    line; None when they agree. The block is the directory (the LFN is the same at every site and never moves):
    a disagreement means the DAQ's day boundary is not the configured zone's, or the file was filed by hand."""
    expected = file_receiving_day(path.file, timezone)
    if expected == path.received:
        return None
    zone = day_zone(timezone)
    local = path.file.file_time.replace(tzinfo=UTC).astimezone(zone)
    name = timezone if isinstance(timezone, str) else str(zone)
    return (
        f"{path.lfn}: FileTime {path.file.file_time:%Y%m%d%H%M%S} (UTC) is {local:%Y-%m-%d %H:%M:%S} in {name}, "
        f"receiving day {block_id_for(expected)}, but the file is in the {path.received:%Y/%m%d} directory "
        f"(block {block_id_for(path.received)}): the DAQ's day boundary and the receiving day's time zone "
        f"({name}) disagree"
    )


def parse_block_id(block_id: str) -> date:
    if not isinstance(block_id, str) or not re.fullmatch(r"[0-9]{8}", block_id):
        raise InvalidNameError("Block", block_id, "expected YYYYMMDD")
    try:
        return datetime.strptime(block_id, "%Y%m%d").date()
    except ValueError:
        raise InvalidNameError("Block", block_id, "not a valid date") from None


def block_name(data_type: DataType, block_id: str) -> str:
    """A block's catalogue name, e.g. ``RAW-20251101`` (the seeds' transfer requests use the same form)."""
    return f"{data_type.value}-{block_id}"


def dataset_name(data_type: DataType, block_id: str) -> str:
    """The dataset a block belongs to: one per data type and month, e.g. ``RAW-202511``."""
    return f"{data_type.value}-{block_id[:6]}"


@dataclass(frozen=True, slots=True)
class RawFilePath:
    """A parsed file path: ``/<root>/juno/<type>/YYYY/mmdd/<file>`` (``<type>``: one of TYPE_DIRECTORIES)."""

    root: str
    data_type: DataType
    received: date
    file: RawFileName

    @property
    def lfn(self) -> str:
        return lfn_for(self.data_type, self.received, self.file.name)

    @property
    def block_id(self) -> str:
        return block_id_for(self.received)

    @property
    def path(self) -> str:
        return f"{self.root}{self.lfn}"

    @classmethod
    def parse(cls, path: str) -> RawFilePath:
        if not isinstance(path, str) or not path:
            raise InvalidNameError("FilePath", path, "must be a non-empty string")
        if not path.startswith("/"):
            raise InvalidNameError("FilePath", path, "must be absolute")
        if "\x00" in path or "//" in path:
            raise InvalidNameError("FilePath", path, "must not contain NUL or empty components")
        parts = path.split("/")[1:]
        if any(p in (".", "..") for p in parts):
            raise InvalidNameError("FilePath", path, "must not contain '.' or '..' components")
        if posixpath.normpath(path) != path:
            raise InvalidNameError("FilePath", path, "is not in normal form")
        if len(parts) < 5 or parts[-5] != EXPERIMENT:
            raise InvalidNameError(
                "FilePath", path, f"expected /<root>/{EXPERIMENT}/<{TYPE_DIRECTORIES}>/YYYY/mmdd/<file>"
            )
        type_dir, year, mmdd, name = parts[-4], parts[-3], parts[-2], parts[-1]
        try:
            data_type = DataType(type_dir.upper())
        except ValueError:
            raise InvalidNameError(
                "FilePath", path, f"data directory {type_dir!r} is not one of {TYPE_DIRECTORIES}"
            ) from None
        if type_dir != data_type.directory:
            raise InvalidNameError("FilePath", path, f"data directory must be lower-case {data_type.directory!r}")
        if not re.fullmatch(r"[0-9]{4}", year) or not re.fullmatch(r"[0-9]{4}", mmdd):
            raise InvalidNameError("FilePath", path, "expected YYYY/mmdd directories")
        received = parse_block_id(year + mmdd)
        file = RawFileName.parse(name)
        if file.data_type is not data_type:
            raise InvalidNameError("FilePath", path, f"a {file.data_type.value} file name in the {type_dir}/ directory")
        root = "/" + "/".join(parts[:-5]) if len(parts) > 5 else ""
        return cls(root=root, data_type=data_type, received=received, file=file)


def lfn_for(data_type: DataType, received: date, file_name: str) -> str:
    """The logical file name: ``/juno/<type>/YYYY/mmdd/<file>`` (e.g. ``raw``, ``rtraw``, ``esd``)."""
    return f"/{EXPERIMENT}/{data_type.directory}/{received:%Y}/{received:%m%d}/{file_name}"


def derived_lfn(lfn: str, data_type: DataType) -> str:
    """The LFN of the ``data_type`` file processing makes from ``lfn`` (RAW → RTRAW → ESD): same day, same stem.

    ``/juno/raw/2025/1101/X.dat`` → ``/juno/rtraw/2025/1101/X.rtraw`` → ``/juno/esd/2025/1101/X.esd``."""
    parsed = parse_lfn(lfn)
    source = DERIVATION.get(data_type)
    if source is None or parsed.data_type is not source:
        raise InvalidNameError("LFN", lfn, f"a {parsed.data_type.value} file does not make {data_type.value}")
    stem = parsed.file.name[: -len(parsed.data_type.extension)]
    return lfn_for(data_type, parsed.received, stem + data_type.extension)


def block_directory_lfn(data_type: DataType, block_id: str) -> str:
    """The LFN of the directory that holds a block's files."""
    day = parse_block_id(block_id)
    return f"/{EXPERIMENT}/{data_type.directory}/{day:%Y}/{day:%m%d}"


USER_AREA = "user"
_USER_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def user_area(user: str, analysis: str) -> str:
    """A user analysis's area: ``/juno/user/<user>/<analysis>``."""
    for what, part in (("user", user), ("analysis", analysis)):
        if not _USER_PART.fullmatch(part) or part in (".", ".."):
            raise InvalidNameError(what, part, "letters, digits, '_', '.' or '-' (at most 64)")
    return f"/{EXPERIMENT}/{USER_AREA}/{user}/{analysis}"


def user_lfn(user: str, analysis: str, lfn: str) -> str:
    """A standard LFN moved into a user's area (pure): ``/juno/esd/2026/1121/X.esd`` →
    ``/juno/user/<user>/<analysis>/esd/2026/1121/X.esd``."""
    standard = parse_lfn(lfn).lfn
    return user_area(user, analysis) + standard[len(f"/{EXPERIMENT}") :]


def split_user_lfn(lfn: str) -> tuple[str | None, str | None, str]:
    """(user, analysis, the standard LFN) of an LFN in a user's area; (None, None, lfn) for any other LFN."""
    prefix = f"/{EXPERIMENT}/{USER_AREA}/"
    if not lfn.startswith(prefix):
        return None, None, lfn
    parts = lfn[len(prefix) :].split("/", 2)
    if len(parts) != 3:
        raise InvalidNameError("LFN", lfn, f"expected {prefix}<user>/<analysis>/<type>/YYYY/mmdd/<file>")
    user, analysis, rest = parts
    user_area(user, analysis)
    return user, analysis, f"/{EXPERIMENT}/{rest}"


def parse_lfn(lfn: str) -> RawFilePath:
    """Parse an LFN (a path with an empty root); one in a user's area parses as the standard LFN it holds."""
    _, _, standard = split_user_lfn(lfn) if isinstance(lfn, str) else (None, None, lfn)
    parsed = RawFilePath.parse(standard)
    if parsed.root:
        raise InvalidNameError("LFN", lfn, f"must start with /{EXPERIMENT}/")
    return parsed


def pfn_for(url_prefix: str, lfn: str) -> str:
    """A site's physical URL for an LFN: its URL prefix followed by the LFN."""
    return url_prefix.rstrip("/") + lfn


def lfn_from_pfn(url_prefix: str, pfn: str) -> str:
    prefix = url_prefix.rstrip("/")
    if not pfn.startswith(prefix + "/"):
        raise InvalidNameError("PFN", pfn, f"does not start with the site prefix {prefix!r}")
    return pfn[len(prefix) :]
