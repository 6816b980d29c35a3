"""User analysis: one generic DAG, one run per submission (``rawflow submit analysis.yaml``).

The run's conf names the submitted steering file (``{"steering_path": ..., "compute_conn_id": ...}``), copied
by ``rawflow submit`` into the analyses folder after validation; the run plans the analysis's sub-jobs over its
complete input blocks and runs them through the same CampaignOperator as production campaigns (jobs table,
retries, output checks, registration with lineage). Sub-job keys are analysis name + step + inputs: submitting
the same analysis again runs only what has not run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import dag, task

from rawflow_airflow.operators.campaign import CampaignOperator

STEERING = "{{ dag_run.conf['steering_path'] }}"


@dag(
    dag_id="rawflow_analysis",
    schedule=None,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=4,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=60), "retry_exponential_backoff": True},
    tags=["rawflow", "analysis"],
    doc_md=__doc__,
)
def rawflow_analysis() -> None:
    @task
    def blocks(dag_run: Any = None) -> list[str]:
        from datetime import UTC

        from rawflow.errors import ConfigError
        from rawflow.processing.campaigns import load_campaign

        path = (dag_run.conf or {}).get("steering_path") if dag_run is not None else None
        if not path:
            raise ConfigError("<conf>", "steering_path", path, "trigger with rawflow submit FILE")
        analysis = load_campaign(path)
        if analysis.kind != "analysis":
            raise ConfigError(path, "kind", analysis.kind, "the analysis DAG runs kind: analysis only")
        return analysis.input_blocks(datetime.now(UTC).date())

    CampaignOperator(
        task_id="process",
        campaign_path=STEERING,
        block_ids=blocks(),
        compute_conn_id="{{ dag_run.conf.get('compute_conn_id', 'rawflow_compute_dirac') }}",
    )


rawflow_analysis()
