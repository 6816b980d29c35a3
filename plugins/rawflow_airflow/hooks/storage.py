"""StorageHook: turns the ``rawflow_storage`` Connection into a gfal2 storage client.

gfal2 runs in the worker only: never build this hook in the scheduler or triggerer (a gfal2 crash kills
its process).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from rawflow.storage.base import Storage
    from rawflow.transfer.engine import StorageSpec


class StorageHook(BaseHook):
    """Password: the bearer token for davs:// doors. Extra: environment gfal2 needs (``X509_CERT_DIR``)."""

    conn_name_attr = "storage_conn_id"
    default_conn_name = "rawflow_storage"
    conn_type = "generic"
    hook_name = "Rawflow storage (gfal2)"

    def __init__(self, storage_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.storage_conn_id = storage_conn_id

    def _options(self) -> dict[str, Any]:
        conn = self.get_connection(self.storage_conn_id)
        # gfal2 reads its CA directory and similar settings from the environment of the worker process.
        for key, value in conn.extra_dejson.items():
            if key.isupper() and isinstance(value, str):
                os.environ[key] = value
        return {"bearer_token": conn.password} if conn.password else {}

    def get_conn(self) -> Storage:
        from rawflow.storage import get_storage

        return get_storage("gfal2", **self._options())

    def storage_spec(self) -> StorageSpec:
        """How a copy child process builds the same storage (credentials travel over a pipe, not argv)."""
        from rawflow.transfer.engine import StorageSpec

        return StorageSpec(options=self._options())
