"""Where the Airflow side finds Rawflow's configuration (read at task run time, never at DAG parse)."""

from __future__ import annotations


def sites_path() -> str:
    """The ``rawflow_sites_path`` Variable, else ``$RAWFLOW_SITES``, else the repository's config/sites.yaml."""
    from airflow.sdk import Variable

    from rawflow.sites import default_sites_path

    value = Variable.get("rawflow_sites_path", default=None)
    return str(value) if value else str(default_sites_path())
