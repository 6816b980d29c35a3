"""CatalogueHook: turns the ``rawflow_catalogue`` Connection into a catalogue client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from rawflow.catalogue.base import Catalogue


class CatalogueHook(BaseHook):
    """Connection extra: ``{"backend": "sql", "url": "<SQLAlchemy URL>"}`` or ``{"backend": "rucio", ...}``.

    For ``rucio`` the host is the server URL, login/password the account's userpass credentials.
    """

    conn_name_attr = "catalogue_conn_id"
    default_conn_name = "rawflow_catalogue"
    conn_type = "generic"
    hook_name = "Rawflow catalogue"

    def __init__(self, catalogue_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.catalogue_conn_id = catalogue_conn_id

    def connection_url(self) -> str:
        conn = self.get_connection(self.catalogue_conn_id)
        extra = conn.extra_dejson
        url = extra.get("url")
        if extra.get("backend", "sql") == "sql":
            if not url:
                raise ValueError(f"connection {self.catalogue_conn_id}: extra.url (SQLAlchemy URL) is required")
            return str(url)
        return str(extra.get("url") or conn.host)

    def quarantine_url(self) -> str:
        """The SQL database for the quarantine table: extra.quarantine_url, else the sql catalogue's own URL."""
        extra = self.get_connection(self.catalogue_conn_id).extra_dejson
        url = extra.get("quarantine_url") or (extra.get("url") if extra.get("backend", "sql") == "sql" else None)
        if not url:
            raise ValueError(f"connection {self.catalogue_conn_id}: extra.quarantine_url is required for this backend")
        return str(url)

    def get_conn(self) -> Catalogue:
        from rawflow.catalogue import get_catalogue

        conn = self.get_connection(self.catalogue_conn_id)
        extra = dict(conn.extra_dejson)
        backend = extra.pop("backend", "sql")
        if backend == "sql":
            return get_catalogue(self.connection_url())
        return get_catalogue(backend, host=conn.host, account=conn.login, password=conn.password, **extra)
