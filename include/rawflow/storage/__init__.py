"""Storage primitives over grid protocols (fsspec-style: small primitives, a lazy name → class registry).

``get_storage("gfal2")`` returns the gfal2 implementation (real xrootd/WebDAV/file); every backend,
and any test double, must pass the shared contract suite in ``tests/integration/storage_contract.py``.
"""

from __future__ import annotations

import importlib

from rawflow.storage.base import CopyRequest, CopyResult, StatResult, Storage

_REGISTRY: dict[str, str] = {
    "gfal2": "rawflow.storage.gfal2_storage:Gfal2Storage",
}


def get_storage(name: str = "gfal2", **options: object) -> Storage:
    """Build a storage backend by name; the module is imported only now (no import-time side effects)."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown storage backend {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    storage: Storage = cls(**options)
    return storage


def register_storage(name: str, target: str) -> None:
    """Register ``"module:Class"`` under ``name`` (for plug-ins and test doubles)."""
    _REGISTRY[name] = target


__all__ = ["CopyRequest", "CopyResult", "StatResult", "Storage", "get_storage", "register_storage"]
