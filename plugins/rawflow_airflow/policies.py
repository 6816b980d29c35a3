"""Airflow cluster policy: a block's per-site replicate task runs on the Celery queue its site names.

A mapped task's instances all get the operator's one ``queue`` when the scheduler creates them; the site of a
map index is only known at run time (the ``targets`` task reads the site policy). ``targets`` therefore also
pushes the queue of each target, in the same order, as XCom ``queues``; this hook, which the scheduler calls
on every task instance it creates or refreshes, gives each ``replicate`` instance its site's queue (the default
queue when the site names none). The LocalExecutor ignores queues: only a Celery grid installs the hook
(``$AIRFLOW_HOME/config/airflow_local_settings.py``, see rawflow.grid.airflow.write_local_settings; in
Kubernetes the chart's ``airflowLocalSettings``, deploy/helm/values.yaml).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

QUEUES_XCOM_KEY = "queues"


def site_queue_for(task_instance: Any, dag_run: Any) -> str | None:
    """The queue the ``targets`` task recorded for this ``replicate`` map index (None: leave it alone)."""
    if (
        task_instance.task_id != "replicate"
        or not str(task_instance.dag_id).startswith("rawflow_block_")
        or task_instance.map_index is None
        or task_instance.map_index < 0
    ):
        return None
    from airflow.models.xcom import XComModel
    from sqlalchemy import select
    from sqlalchemy.orm import object_session

    # The scheduler's own session (the run and its instances live in it): read-only, never committed here.
    session = object_session(dag_run) if dag_run is not None else None
    session = session or object_session(task_instance)
    if session is None:
        return None
    row = session.execute(
        select(XComModel.value).where(
            XComModel.dag_id == task_instance.dag_id,
            XComModel.run_id == task_instance.run_id,
            XComModel.task_id == "targets",
            XComModel.map_index == -1,
            XComModel.key == QUEUES_XCOM_KEY,
        )
    ).first()
    if row is None:
        return None
    queues = XComModel.deserialize_value(row)
    if not isinstance(queues, list) or task_instance.map_index >= len(queues):
        return None
    queue = queues[task_instance.map_index]
    return queue if isinstance(queue, str) and queue else None


def task_instance_mutation_hook(task_instance: Any, dag_run: Any = None) -> None:
    try:
        queue = site_queue_for(task_instance, dag_run)
    except Exception:  # a policy must never take the scheduler down: the default queue still works
        log.exception("rawflow: could not look up the site queue of %s", task_instance)
        return
    if queue:
        task_instance.queue = queue
