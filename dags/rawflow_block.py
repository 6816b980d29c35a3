"""Daily raw-block DAGs: one run per block (receiving day) and data type.

register (catalogue bookkeeping) → replicate per target site, in parallel (plan → transfer chunks → validate
→ retransfer, deferred between rounds until the block is closed) → block report. The tape archive is one of
the targets (unless the type's policy says otherwise, as ESD's does): its rounds copy to IHEP-TAPE and poll the
archive until every file is on tape. A derived block (RTRAW, ESD) closes only once its parent block is closed
and keep-up has nothing pending for the day, or a bounded wait after the parent closed has passed
(rawflow.processing.closing).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset, dag, task

from rawflow_airflow.operators.block import ReplicateBlockSiteOperator
from rawflow_airflow.timetables import BlockDayTimetable

# A block is a receiving day in the configured zone ([rawflow] receiving_day_timezone; see timetables.py).
BLOCK_ID = "{{ dag.timetable.block_id(logical_date or dag_run.run_after) }}"


def block_dag(data_type: str) -> None:
    @dag(
        dag_id=f"rawflow_block_{data_type.lower()}",
        schedule=BlockDayTimetable(),
        start_date=datetime(2026, 11, 1),
        catchup=False,
        max_active_runs=7,
        max_active_tasks=16,
        default_args={"retries": 3, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True},
        tags=["rawflow", "block", data_type],
        doc_md=__doc__,
    )
    def rawflow_block() -> None:
        @task
        def targets(dag_run: Any = None, dag: Any = None, ti: Any = None) -> list[str]:
            from rawflow_airflow.policies import QUEUES_XCOM_KEY
            from rawflow_airflow.tasks import block_target_queues, block_targets

            # `rawflow block retransfer --site SE` triggers a run with conf {"sites": [SE]}.
            names = block_targets(
                only=(dag_run.conf or {}).get("sites") if dag_run else None,
                timezone=dag.timetable.timezone_name if dag is not None else None,
                data_type=data_type,
            )
            # Each site's Celery queue, same order: the cluster policy (policies.py) routes its replicate there.
            ti.xcom_push(key=QUEUES_XCOM_KEY, value=block_target_queues(names))
            return names

        replicate = ReplicateBlockSiteOperator.partial(
            task_id="replicate", data_type=data_type, pool="rawflow_transfers", map_index_template="{{ task.site }}"
        ).expand(site=targets())

        @task(
            trigger_rule="all_done",
            outlets=[Asset(name=f"rawflow-{data_type.lower()}-blocks-done", uri=f"rawflow://blocks/{data_type}/done")],
        )
        def report(logical_date: Any = None, dag_run: Any = None, dag: Any = None) -> dict[str, Any]:
            from rawflow_airflow.tasks import block_report

            return block_report(data_type, dag.timetable.block_id(logical_date or dag_run.run_after))

        replicate >> report()

    rawflow_block()


# RAW from the receiver; RTRAW and ESD from keep-up processing (rawflow_keepup), each by its own policy
# (config/sites.yaml `policies:`; ESD goes to fewer sites and not to tape).
for _data_type in ("RAW", "RTRAW", "ESD"):
    block_dag(_data_type)
