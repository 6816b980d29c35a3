"""Reconciliation: every 15 minutes, each open block's Tier-0 directory against the catalogue.

Files whose announcements were lost (the broker restarted empty, a producer crashed) are registered with the
size and adler32 the Tier-0 reports; bad ones are quarantined like rejected announcements. One task loops
over the open blocks (and the latest receiving days); the block DAG's rounds then replicate what it found.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import dag, task


@dag(
    dag_id="rawflow_reconcile",
    schedule=timedelta(minutes=15),
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True},
    tags=["rawflow", "receiver", "reconcile"],
    doc_md=__doc__,
)
def rawflow_reconcile() -> None:
    @task
    def reconcile_open_blocks() -> dict[str, Any]:
        from rawflow_airflow.ops_tasks import reconcile_open_blocks

        return reconcile_open_blocks()

    reconcile_open_blocks()


rawflow_reconcile()
