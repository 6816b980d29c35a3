"""deploy/: the Helm values and systemd units parse and carry what a CeleryExecutor install needs."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPONENTS = {
    "airflow-scheduler.service": ["scheduler"],
    "airflow-dag-processor.service": ["dag-processor"],
    "airflow-triggerer.service": ["triggerer"],
    "airflow-api-server.service": ["api-server"],
    "airflow-celery-worker@.service": ["celery", "worker"],
}


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


def test_helm_values_run_rawflow_image_on_celery() -> None:
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    assert values["executor"] == "CeleryExecutor"
    assert values["airflowVersion"].startswith("3.3")
    image = values["images"]["airflow"]
    assert image["repository"] and image["tag"] == values["defaultAirflowTag"]
    assert values["workers"]["replicas"] >= 2
    assert values["dagProcessor"]["enabled"] and values["triggerer"]["enabled"]
    assert values["redis"]["enabled"]
    # The metadata database is an external Postgres given through a Secret, never inline.
    assert values["postgresql"]["enabled"] is False and values["data"]["metadataSecretName"]
    assert "metadataConnection" not in values["data"]
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["RAWFLOW_SITES"] == "/opt/rawflow/config/sites.yaml"  # where the Dockerfile puts the policy
    assert "ENV RAWFLOW_SITES=/opt/rawflow/config/sites.yaml" in (DEPLOY.parent / "Dockerfile").read_text()
    assert env["RAWFLOW_CAMPAIGNS_DIR"] == "/opt/rawflow/config/campaigns"
    assert values["dags"]["gitSync"]["enabled"] is False  # DAGs come from the image
    # The site-queue routing policy (plugins/rawflow_airflow/policies.py) is installed as the local settings.
    assert "from rawflow_airflow.policies import task_instance_mutation_hook" in values["airflowLocalSettings"]
    for section in values["config"].values():
        assert all(isinstance(v, str) for v in section.values())  # the chart writes them into airflow.cfg


def test_systemd_units_one_per_component_scheduler_always_restarted() -> None:
    for name, command in COMPONENTS.items():
        unit = _unit(name)
        service = unit["Service"]
        argv = shlex.split(service["ExecStart"])
        assert Path(argv[0]).name == "airflow" and argv[1 : 1 + len(command)] == command, name
        assert service["EnvironmentFile"] == "/etc/rawflow/airflow.env", name
        assert service["User"] == "airflow", name
        assert unit["Install"]["WantedBy"] == "rawflow.target", name
        assert unit["Unit"]["PartOf"] == "rawflow.target", name
    scheduler = _unit("airflow-scheduler.service")
    assert scheduler["Service"]["Restart"] == "always"
    assert scheduler["Unit"]["StartLimitIntervalSec"] == "0"  # a [Unit] key: never stop restarting it
    worker = shlex.split(_unit("airflow-celery-worker@.service")["Service"]["ExecStart"])
    assert worker[worker.index("--queues") + 1] == "default,%i"
    target = _unit("rawflow.target")
    assert set(target["Unit"]["Wants"].split()) == set(COMPONENTS) - {"airflow-celery-worker@.service"}


def test_systemd_environment_example_names_celery_and_postgres() -> None:
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "systemd" / "airflow.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith(("redis://", "amqp://"))


def test_image_points_the_campaign_dags_at_the_steering_files_it_copies() -> None:
    """The DAGs sit in /opt/airflow/dags, so their default folder (config/campaigns next to dags/) is not in the
    image: RAWFLOW_CAMPAIGNS_DIR names where the image copies config/, and the repository has the folder."""
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text().splitlines()
    env = dict(line.removeprefix("ENV ").split("=", 1) for line in dockerfile if line.startswith("ENV "))
    copies = {
        parts[-2]: parts[-1]
        for parts in (line.split() for line in dockerfile if line.startswith("COPY "))
        if len(parts) >= 3
    }
    assert copies["config"] == "/opt/rawflow/config" and copies["dags"] == "/opt/airflow/dags"
    assert env["RAWFLOW_CAMPAIGNS_DIR"] == "/opt/rawflow/config/campaigns"
    assert env["RAWFLOW_SITES"] == "/opt/rawflow/config/sites.yaml"
    # What the image copies there: the repository's campaigns folder, with its steering files.
    assert sorted(p.name for p in (DEPLOY.parent / "config" / "campaigns").glob("*.yaml"))
