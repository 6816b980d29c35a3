"""Registers Rawflow's Airflow extensions (Airflow loads every module at the top of the plugins folder).

Classes are imported from the ``rawflow_airflow`` package so they keep one import path everywhere: a DAG
serialised with ``rawflow_airflow.timetables.BlockDayTimetable`` finds the same class registered here.
The Rawflow view (``rawflow_airflow.ui``) is mounted at ``/rawflow`` in the API server and listed in the
UI's navigation; it checks Airflow's login itself (plugin apps are not protected by Airflow).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from rawflow_airflow.timetables import BlockDayTimetable
from rawflow_airflow.ui.app import app as rawflow_view

RAWFLOW_VIEW_PREFIX = "/rawflow"


class RawflowPlugin(AirflowPlugin):
    name = "rawflow"
    timetables = [BlockDayTimetable]  # noqa: RUF012 (AirflowPlugin declares it so)
    fastapi_apps = [{"app": rawflow_view, "url_prefix": RAWFLOW_VIEW_PREFIX, "name": "Rawflow"}]  # noqa: RUF012
    external_views = [  # noqa: RUF012
        {
            "name": "Rawflow",
            "href": f"{RAWFLOW_VIEW_PREFIX}/",
            "icon": f"{RAWFLOW_VIEW_PREFIX}/static/rawflow.svg",
            "url_route": "rawflow",
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
