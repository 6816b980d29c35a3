"""Typed errors shared by the whole domain core.

Transient errors are worth retrying (Airflow retries them); permanent errors fail fast with the reason.
"""

from __future__ import annotations


class RawflowError(Exception):
    """Base class of every error Rawflow raises on purpose."""


class InvalidNameError(RawflowError, ValueError):
    """A raw file name or path that does not follow the naming scheme."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {field} {value!r}: {reason}")


class ConfigError(RawflowError, ValueError):
    """A configuration file that does not validate. The message names the field and the value."""

    def __init__(self, source: str, field: str, value: object, reason: str) -> None:
        self.source = source
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{source}: {field}={value!r}: {reason}")


class NotFoundError(RawflowError):
    """What was asked for is not there: a block, a file, a quarantined message (the CLI exits 1)."""


class UsageError(RawflowError):
    """A command line that cannot be run as given: a bad option value, a missing argument (the CLI exits 2)."""


class TransientError(RawflowError):
    """Worth retrying: a timeout, a site briefly down, a broker not reachable yet."""


class PermanentError(RawflowError):
    """Retrying will not help: a missing source, a checksum that differs, a refused permission."""


class StorageError(RawflowError):
    """A storage operation failed; ``errno`` is the POSIX error gfal2 reported, when known."""

    def __init__(self, operation: str, url: str, message: str, errno: int | None = None) -> None:
        self.operation = operation
        self.url = url
        self.errno = errno
        super().__init__(f"{operation} {url}: {message}" + (f" (errno {errno})" if errno else ""))


class TransientStorageError(StorageError, TransientError):
    """A storage failure that may pass: connection refused, timeout, server busy."""


class PermanentStorageError(StorageError, PermanentError):
    """A storage failure that will not pass by itself: no such file, permission denied."""


class StorageNotFoundError(PermanentStorageError):
    """The file or directory does not exist at that URL."""
