"""The storage interface every backend implements. URLs are full physical URLs (root://, davs://, file://)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class StatResult:
    url: str
    size: int
    is_dir: bool
    mtime: float


@dataclass(frozen=True, slots=True)
class CopyRequest:
    """Copy ``source`` to ``destination``. ``checksum`` is the expected adler32 (8 lower-case hex digits)."""

    source: str
    destination: str
    checksum: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class CopyResult:
    """One copy's outcome. ``size_at_destination``/``adler32_at_destination``: what the destination held right
    after the copy, when the copier measured it (the copy engine's child does; None = not measured)."""

    request: CopyRequest
    ok: bool
    error: str | None = None
    transient: bool = False
    bytes: int = 0
    size_at_destination: int | None = None
    adler32_at_destination: str | None = None


@runtime_checkable
class Storage(Protocol):
    """Small primitives; everything above them (planning, validation, retries) lives elsewhere."""

    def stat(self, url: str) -> StatResult: ...

    def checksum(self, url: str, algorithm: str = "adler32") -> str:
        """Server-side checksum, lower-case hex, zero-padded (adler32: 8 digits)."""
        ...

    def exists(self, url: str) -> bool: ...

    def mkdir_p(self, url: str) -> None: ...

    def listdir(self, url: str) -> list[str]:
        """Entry names in a directory (not full URLs), sorted."""
        ...

    def list_sizes(self, url: str) -> dict[str, int]:
        """File name → size for a directory's files (subdirectories left out), from one listing."""
        ...

    def unlink(self, url: str) -> None: ...

    def put_bytes(self, url: str, data: bytes) -> None:
        """Write a whole file (creating parent directories); used by the announcer and tests."""
        ...

    def read_bytes(self, url: str) -> bytes: ...

    def copy(
        self,
        requests: Sequence[CopyRequest],
        *,
        tpc: str = "auto",
        parallel: int = 10,
        overwrite: bool = False,
        verify: bool = True,
        preflight: bool = True,
    ) -> list[CopyResult]:
        """Copy many files; ``tpc`` is "only" (third-party), "never" (streamed) or "auto". ``verify=False``:
        the caller compares checksums itself (so each replica is checksummed once); ``preflight=False``: the caller
        has checked sources and destinations already.

        Never raises for a single file's failure: each result says ok/error and whether it is transient.
        """
        ...

    def archive_poll(self, urls: Iterable[str]) -> dict[str, bool | str]:
        """For each URL on a tape endpoint: True when archived, False while pending, an error text else."""
        ...
