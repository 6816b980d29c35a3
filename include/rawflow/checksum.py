"""adler32 of local data, streamed in large buffers (the same value storage servers report)."""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import BinaryIO

# 1 MiB: large enough to amortise the read calls, small enough to stay in cache while zlib sums it.
BUFFER = 1024 * 1024
_ADLER32 = re.compile(r"[0-9a-f]{8}")


def format_adler32(value: int) -> str:
    return f"{value & 0xFFFFFFFF:08x}"


def normalise_adler32(text: str) -> str:
    """Lower-case, zero-padded to 8 digits; raises ValueError for anything that is not adler32 hex."""
    if not isinstance(text, str):
        raise ValueError(f"checksum must be a string, got {type(text).__name__}")
    value = text.strip().lower()
    if value.startswith("adler32:"):
        value = value[len("adler32:") :]
    if not value or len(value) > 8 or not re.fullmatch(r"[0-9a-f]+", value):
        raise ValueError(f"checksum {text!r} is not adler32 hex (1 to 8 hex digits)")
    return value.zfill(8)


def adler32_bytes(data: bytes) -> str:
    return format_adler32(zlib.adler32(data))


def adler32_stream(stream: BinaryIO, buffer: int = BUFFER) -> str:
    """adler32 of a binary stream, read into one reused buffer (no allocation per read)."""
    value = 1
    buf = bytearray(buffer)
    view = memoryview(buf)
    readinto = getattr(stream, "readinto", None)
    if readinto is None:
        while chunk := stream.read(buffer):
            value = zlib.adler32(chunk, value)
        return format_adler32(value)
    while n := readinto(buf):
        value = zlib.adler32(view[:n], value)
    return format_adler32(value)


def adler32_file(path: str | Path, buffer: int = BUFFER) -> str:
    with open(path, "rb", buffering=0) as f:
        return adler32_stream(f, buffer)


def is_adler32(text: str) -> bool:
    return bool(_ADLER32.fullmatch(text))
