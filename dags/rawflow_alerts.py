"""Shifter alerts: every 5 minutes, one e-mail per block × site Problematic longer than the deadline.

Deadline: Variable ``rawflow_alert_deadline_minutes`` (default 120); recipients: ``rawflow_alert_email``
(comma-separated); sent through the ``smtp_default`` connection. Each block × site is mailed once per episode.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag

from rawflow_airflow.operators.alerts import ProblematicAlertOperator


@dag(
    dag_id="rawflow_alerts",
    schedule="*/5 * * * *",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["rawflow", "alerts"],
    doc_md=__doc__,
)
def rawflow_alerts() -> None:
    ProblematicAlertOperator(task_id="email_problematic")


rawflow_alerts()
