"""Transfer backends behind one interface; ``get_transfertool(name, **opts)`` imports the chosen one lazily."""

from __future__ import annotations

import importlib
from typing import Any

from rawflow.errors import ConfigError
from rawflow.transfer.base import (
    FileState,
    FileStatus,
    JobState,
    JobStatus,
    TransferAuthError,
    TransferBackendError,
    TransferError,
    TransferFile,
    TransferJob,
    TransferJobError,
    Transfertool,
    UnknownJobError,
)

# name → "module:class"; imported only when asked for (gfal2 and the FTS client are heavy and optional).
TRANSFERTOOLS = {
    "gfal2": "rawflow.transfer.gfal2_tool:Gfal2Transfertool",
    "fts3": "rawflow.transfer.fts3_tool:Fts3Transfertool",
}


def get_transfertool(name: str, **opts: Any) -> Transfertool:
    """A transfer backend by name (``gfal2`` or ``fts3``), constructed with ``opts``."""
    try:
        target = TRANSFERTOOLS[name]
    except KeyError:
        raise ConfigError("<transfer>", "transfertool", name, f"known: {', '.join(TRANSFERTOOLS)}") from None
    module_name, class_name = target.split(":")
    tool: Transfertool = getattr(importlib.import_module(module_name), class_name)(**opts)
    return tool


__all__ = [
    "TRANSFERTOOLS",
    "FileState",
    "FileStatus",
    "JobState",
    "JobStatus",
    "TransferAuthError",
    "TransferBackendError",
    "TransferError",
    "TransferFile",
    "TransferJob",
    "TransferJobError",
    "Transfertool",
    "UnknownJobError",
    "get_transfertool",
]
