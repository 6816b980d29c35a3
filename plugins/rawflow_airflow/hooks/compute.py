"""ComputeHook: turns the ``rawflow_compute`` Connection into a compute backend (HTCondor, later DIRAC).

Connection extra: ``{"backend": "htcondor", ...}``; every other extra key is passed to the backend's
constructor (e.g. the collector/schedd address, the software area). The backend talks to the batch system:
build it on the worker or, for polling only, inside the trigger's thread; never in the scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from rawflow.compute.base import ComputeBackend


class ComputeHook(BaseHook):
    conn_name_attr = "compute_conn_id"
    default_conn_name = "rawflow_compute"
    conn_type = "generic"
    hook_name = "Rawflow compute backend"

    def __init__(self, compute_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.compute_conn_id = compute_conn_id

    def backend_options(self) -> tuple[str, dict[str, Any]]:
        conn = self.get_connection(self.compute_conn_id)
        extra = dict(conn.extra_dejson)
        backend = str(extra.pop("backend", "htcondor"))
        if conn.host and "host" not in extra:
            extra["host"] = conn.host
        return backend, extra

    def get_conn(self) -> ComputeBackend:
        from rawflow.compute import get_compute_backend

        backend, options = self.backend_options()
        return get_compute_backend(backend, **options)
