"""DataReceiver: Kafka announcements → checks → catalogue registration (continuous, one drain per run)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag

from rawflow_airflow.operators.receiver import DrainAnnouncementsOperator


@dag(
    dag_id="rawflow_receiver",
    schedule="@continuous",
    start_date=datetime(2025, 1, 1),
    max_active_runs=1,
    catchup=False,
    tags=["rawflow", "receiver"],
    doc_md=__doc__,
)
def rawflow_receiver() -> None:
    DrainAnnouncementsOperator(
        task_id="drain_announcements",
        retries=5,
        retry_delay=timedelta(seconds=5),
        retry_exponential_backoff=True,
    )


rawflow_receiver()
