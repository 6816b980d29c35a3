"""The file catalogue: one interface (:class:`Catalogue`), backends chosen by name or URL.

``get_catalogue(url_or_name, **opts)``:

- ``"sql+sqlite:///path.db"``, ``"sqlite:///path.db"``, ``"sql+postgresql://…"``, ``"postgresql://…"`` → the
  ``sql`` backend on that database; ``get_catalogue("sql", url=...)`` is the same.
- ``"rucio"`` with options ``host``, ``account``, ``username``, ``password`` (or ``RUCIO_*`` settings of a
  rucio.cfg), ``scope`` (default ``juno``); ``"rucio+http://host:port"`` names the host in the URL.

Backends are imported only when asked for, so the sql path never imports rucio-clients and vice versa.
"""

from __future__ import annotations

import importlib
from typing import Any

from rawflow.catalogue.base import (
    METADATA_KEYS,
    BlockClosedError,
    BlockRecord,
    Catalogue,
    FileRecord,
    RegisterResult,
    ReplicaInfo,
    ReplicaState,
    UnknownMetadataKeyError,
    UnknownParentError,
)
from rawflow.errors import PermanentError

__all__ = [
    "BACKENDS",
    "METADATA_KEYS",
    "BlockClosedError",
    "BlockRecord",
    "Catalogue",
    "FileRecord",
    "RegisterResult",
    "ReplicaInfo",
    "ReplicaState",
    "UnknownMetadataKeyError",
    "UnknownParentError",
    "get_catalogue",
]

BACKENDS: dict[str, str] = {
    "sql": "rawflow.catalogue.sql:SqlCatalogue",
    "rucio": "rawflow.catalogue.rucio_backend:RucioCatalogue",
}

_SQL_SCHEMES = ("sqlite", "postgresql", "postgres")


def _backend_class(name: str) -> Any:
    try:
        module_name, _, class_name = BACKENDS[name].partition(":")
    except KeyError:
        raise PermanentError(f"unknown catalogue backend {name!r}; known: {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def get_catalogue(url_or_name: str, **opts: Any) -> Catalogue:
    """A catalogue for a backend name (options as keywords) or a URL (see the module docstring)."""
    scheme = url_or_name.split("://", 1)[0] if "://" in url_or_name else ""
    if not scheme:
        catalogue: Catalogue = _backend_class(url_or_name)(**opts)
        return catalogue
    head, _, driver = scheme.partition("+")
    if head == "sql" or head in _SQL_SCHEMES:
        catalogue = _backend_class("sql")(url_or_name, **opts)
        return catalogue
    if head == "rucio":
        if not driver:
            raise PermanentError(f"rucio URL {url_or_name!r} needs a transport: rucio+http://… or rucio+https://…")
        host = url_or_name[len("rucio+") :]
        catalogue = _backend_class("rucio")(host=host, **opts)
        return catalogue
    raise PermanentError(f"no catalogue backend for URL scheme {scheme!r}; known: sql+…, sqlite, postgresql, rucio+…")
