"""TransfertoolHook: builds the chosen transfer backend from its Connection.

``gfal2``: copies from the worker with the storage settings of ``rawflow_storage`` (token, CA dir).
``fts3``: the FTS3 REST endpoint is the host of ``rawflow_fts3``, its password the access token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from rawflow.transfer.base import Transfertool


class TransfertoolHook(BaseHook):
    hook_name = "Rawflow transfer backend"

    def __init__(
        self,
        backend: str = "gfal2",
        *,
        storage_conn_id: str = "rawflow_storage",
        fts3_conn_id: str = "rawflow_fts3",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.backend = backend
        self.storage_conn_id = storage_conn_id
        self.fts3_conn_id = fts3_conn_id

    def get_conn(self) -> Transfertool:
        from rawflow.transfer import get_transfertool
        from rawflow_airflow.hooks.storage import StorageHook

        if self.backend == "gfal2":
            return get_transfertool("gfal2", storage=StorageHook(self.storage_conn_id).storage_spec())
        if self.backend == "fts3":
            conn = self.get_connection(self.fts3_conn_id)
            if not conn.host:
                raise ValueError(f"connection {self.fts3_conn_id}: host (the FTS3 REST URL) is required")
            extra = conn.extra_dejson
            return get_transfertool(
                "fts3",
                endpoint=conn.host,
                token=conn.password or "",
                verify_tls=extra.get("verify_tls", True),
            )
        raise ValueError(f"unknown transfer backend {self.backend!r}; known: gfal2, fts3")
