"""Deterministic, all-or-nothing ROOT output with uproot, and checked ROOT input.

uproot stamps every file with a random UUID and the wall-clock time (file header, directories, keys,
TTrees). A payload must give the same bytes for the same input, so the UUIDs come from a seed and every
timestamp is a fixed time (the run's start) while a file is written; compression is ZSTD from cramjam.
"""

from __future__ import annotations

import contextlib
import datetime as _datetime
import os
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uproot
import uproot.writing._cascade
import uproot.writing._cascadentuple
import uproot.writing._cascadetree
import uproot.writing.writable

from rawflow.payloads.errors import InputError

_UPROOT_MODULES_WITH_CLOCKS = (
    uproot.writing._cascade,
    uproot.writing._cascadentuple,
    uproot.writing._cascadetree,
    uproot.writing.writable,
)
_clock_lock = threading.Lock()
# ZSTD from cramjam (compiled into its wheel): the same bytes on every host, unlike zlib, whose output may
# change with the system library's version (Debian 12 hosts 1.2.13, the Debian 13 pool 1.3.1). ROOT ≥ 6.20.
COMPRESSION = uproot.ZSTD(3)


class _FixedDatetimeModule:
    """Stands in for the ``datetime`` module inside uproot's writer: ``datetime.datetime.now()`` is fixed."""

    def __init__(self, moment: _datetime.datetime) -> None:
        fixed = moment

        class _Datetime(_datetime.datetime):
            @classmethod
            def now(cls, tz: _datetime.tzinfo | None = None) -> _Datetime:
                return cls(*fixed.timetuple()[:6], tzinfo=tz)

        self.datetime = _Datetime

    def __getattr__(self, name: str) -> Any:
        return getattr(_datetime, name)


@contextlib.contextmanager
def _frozen_clock(moment: _datetime.datetime) -> Iterator[None]:
    with _clock_lock:
        saved = [module.datetime for module in _UPROOT_MODULES_WITH_CLOCKS]
        try:
            for module in _UPROOT_MODULES_WITH_CLOCKS:
                module.datetime = _FixedDatetimeModule(moment)
            yield
        finally:
            for module, original in zip(_UPROOT_MODULES_WITH_CLOCKS, saved, strict=True):
                module.datetime = original


def seeded_uuids(seed: str) -> Callable[[], uuid.UUID]:
    """A UUID function for uproot that gives the same sequence of UUIDs for the same seed."""
    counter = iter(range(1 << 62))
    return lambda: uuid.uuid5(uuid.NAMESPACE_URL, f"rawflow:{seed}:{next(counter)}")


def root_time(start_time_ns: int) -> _datetime.datetime:
    """The TDatime stamped into an output: the run's start (UTC, to the second; ROOT starts in 1995)."""
    moment = _datetime.datetime.fromtimestamp(start_time_ns // 1_000_000_000, _datetime.UTC).replace(tzinfo=None)
    return max(moment, _datetime.datetime(1995, 1, 1))


def write_root(
    output: Path, *, seed: str, moment: _datetime.datetime, fill: Callable[[Any], None], check: Callable[[Path], None]
) -> None:
    """Write ``output`` through ``fill(file)`` in a private directory beside it, ``check`` it, then rename it
    into place (never half a file). ROOT stores the file's base name, so the temporary has the final one."""
    scratch = output.parent / f".{output.name}.tmp-{os.getpid()}"
    scratch.mkdir(exist_ok=True)
    temporary = scratch / output.name
    try:
        with (
            _frozen_clock(moment),
            uproot.recreate(temporary, uuid_function=seeded_uuids(seed), compression=COMPRESSION) as file,
        ):
            fill(file)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        check(temporary)
        os.replace(temporary, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        with contextlib.suppress(OSError):
            scratch.rmdir()


def write_text_atomically(output: Path, text: str) -> None:
    temporary = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def describe(path: Path, events: int) -> dict[str, Any]:
    """An input or output for the JSON report: name, size, adler32, events."""
    checksum = 1
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            checksum = zlib.adler32(chunk, checksum)
            size += len(chunk)
    return {"path": str(path), "name": path.name, "size": size, "adler32": f"{checksum:08x}", "events": events}


def open_root(path: Path, trees: tuple[str, ...]) -> Any:
    """Open a ROOT file that must hold ``trees``; InputError with the reason otherwise."""
    try:
        file = uproot.open(path)
    except FileNotFoundError:
        raise
    except Exception as error:  # uproot raises many kinds for a file that is not ROOT or is cut short
        raise InputError(f"not a readable ROOT file ({type(error).__name__}: {_one_line(error)})")
    missing = [name for name in trees if name not in file]
    if missing:
        file.close()
        raise InputError(f"no {', '.join(missing)} in the ROOT file")
    return file


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """Around reading an opened ROOT file's content: uproot's errors there (a file cut short after its
    directory, a damaged basket) are the input's fault, one InputError line (a missing file stays an error)."""
    try:
        yield
    except (InputError, FileNotFoundError):
        raise
    except Exception as error:
        raise InputError(f"not a readable ROOT file ({type(error).__name__}: {_one_line(error)})") from None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:200] + ("…" if len(text) > 200 else "")
