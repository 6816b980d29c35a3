"""The payloads' typed errors: a malformed input (exit 3, one line) versus everything else (exit 1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rawflow.payloads.rawformat import RawFormatError

T = TypeVar("T")


class InputError(ValueError):
    """A malformed input file (RTRAW/ESD); ``reason`` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedInput(Exception):
    """A payload's input is malformed: names the file and says why (exit 3)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path.name}: {reason}")
        self.path = path
        self.reason = reason


class ParameterError(ValueError):
    """A payload parameter that is missing or not usable (exit 2: the job description is wrong, not the input)."""


class OutputCheckError(RuntimeError):
    """The payload's own output did not read back as written (exit 1: not the input's fault)."""


def checked(path: Path, step: Callable[[], T]) -> T:
    """Run ``step``; a malformed-input error from it becomes MalformedInput naming ``path``."""
    try:
        return step()
    except (RawFormatError, InputError) as error:
        raise MalformedInput(path, error.reason)
