"""Production campaigns and analyses: one DAG per steering file of the campaigns folder (``config/campaigns``,
or the ``$RAWFLOW_CAMPAIGNS_DIR`` folder), ``rawflow_campaign_<name>``.

Parsing reads only that folder's YAML files. A file that does not validate never breaks the other campaigns:
it gets no DAG and its one-line error (file, field, value) is a warning of this file (in the DAG processor's
log; an import *error* here would drop every campaign of this file). The same line is in Airflow's import
errors, as those of ``rawflow_campaign_errors.py`` (which checks the folder with the same function and makes
no DAG), and from ``rawflow campaign check FILE``.

A new campaign's DAG starts paused: unpausing it is starting the campaign. Data-driven: a run starts when the input data type's block DAG finishes a block (its ``rawflow://blocks/<TYPE>/
done`` Asset) and every 30 minutes as a catch-up (an MC campaign, which reads no input, every 30 minutes); the task plans only blocks complete at the input site and
only sub-jobs that have no record yet (deterministic keys: campaign + step + input), so new input is processed
as it arrives and nothing twice. One deferrable task runs every step over all the campaign's blocks in
batches (one HTCondor cluster or DIRAC parametric job each).
"""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from rawflow.processing.campaigns import Campaign, campaigns_folder, check_campaign_folder, load_campaign
from rawflow_airflow.operators.campaign import CampaignOperator

COMPUTE_CONNECTIONS = {"htcondor": "rawflow_compute", "dirac": "rawflow_compute_dirac"}


class CampaignFileWarning(UserWarning):
    """A steering file that does not validate (one line: file, field, value)."""


def campaigns_dir() -> Path:
    return campaigns_folder(Path(__file__).resolve().parents[1] / "config" / "campaigns")


def campaign_schedule(campaign: Campaign) -> Any:
    """Every 30 minutes, and when the input type's block DAG finishes a block; an MC campaign reads no input:
    every 30 minutes only (each run plans what the steps before left ready, never the same job twice)."""
    every = CronTriggerTimetable("*/30 * * * *", timezone="UTC")
    if campaign.input_data_type is None:
        return every
    input_type = campaign.input_data_type.value
    return AssetOrTimeSchedule(
        timetable=every,
        assets=Asset(name=f"rawflow-{input_type.lower()}-blocks-done", uri=f"rawflow://blocks/{input_type}/done"),
    )


def campaign_dag(campaign: Campaign, path: Path) -> None:
    @dag(
        dag_id=campaign.dag_id,
        schedule=campaign_schedule(campaign),
        start_date=datetime(2026, 11, 1),
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=True,  # a production manager starts a campaign by unpausing it
        default_args={"retries": 2, "retry_delay": timedelta(seconds=60), "retry_exponential_backoff": True},
        tags=["rawflow", "campaign", campaign.kind, campaign.backend],
        doc_md=f"**{campaign.kind}** `{campaign.name}` from `{path.name}`: "
        f"{' → '.join(s.payload for s in campaign.steps)} on {campaign.backend}. {campaign.description}",
    )
    def rawflow_campaign() -> None:
        @task
        def blocks(campaign_path: str = str(path)) -> list[str]:
            from datetime import UTC
            from datetime import datetime as dt

            return load_campaign(campaign_path).input_blocks(dt.now(UTC).date())

        CampaignOperator(
            task_id="process",
            campaign_path=str(path),
            block_ids=blocks(),
            compute_conn_id=COMPUTE_CONNECTIONS[campaign.backend],
            max_failures=campaign.max_attempts,
        )

    rawflow_campaign()


def build_campaign_dags(folder: Path) -> list[str]:
    """A DAG per valid steering file; a warning per invalid one. Returns the DAG ids made."""
    checked = check_campaign_folder(folder)
    for line in checked.errors:
        warnings.warn(line, CampaignFileWarning, stacklevel=1)
    for path, campaign in checked.campaigns:
        campaign_dag(campaign, path)
    return [campaign.dag_id for _, campaign in checked.campaigns]


CAMPAIGN_DAGS: Any = build_campaign_dags(campaigns_dir())
