"""Keep-up processing: RAW → RTRAW → ESD and DQM per run, as RAW files are registered.

Data-driven: a run starts when the receiver registers files of a block (its Asset events through the
``rawflow-block-registrations`` alias, ``rawflow://blocks/RAW-YYYYMMDD``), and every 30 minutes as a catch-up
over the last days for anything missed. Each stage is one deferrable task over the run's blocks: jobs are
submitted in batches (one HTCondor cluster each), never one task per file. RTRAW registered at the Tier-0
then flows through ``rawflow_block_rtraw`` replication like RAW.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import AssetAlias, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from rawflow_airflow.operators.keepup import KeepupOperator

BLOCK_ALIAS = "rawflow-block-registrations"  # the receiver's alias (operators/receiver.py)


@dag(
    dag_id="rawflow_keepup",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("*/30 * * * *", timezone="UTC"), assets=AssetAlias(BLOCK_ALIAS)
    ),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True},
    tags=["rawflow", "processing"],
    doc_md=__doc__,
)
def rawflow_keepup() -> None:
    @task
    def blocks(triggering_asset_events: Any = None, dag_run: Any = None) -> list[str]:
        from rawflow_airflow.tasks import keepup_blocks

        conf = (dag_run.conf or {}) if dag_run is not None else {}
        return keepup_blocks(triggering_asset_events, conf.get("blocks"))

    block_ids = blocks()
    common: dict[str, Any] = {"block_ids": block_ids}
    convert = KeepupOperator(task_id="raw2rtraw", stages=["raw2rtraw"], **common)
    reconstruct = KeepupOperator(task_id="rec", stages=["rec"], trigger_rule="all_done", **common)
    dqm = KeepupOperator(task_id="dqm", stages=["dqm"], trigger_rule="all_done", **common)
    convert >> reconstruct >> dqm


rawflow_keepup()
