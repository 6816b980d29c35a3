"""Registers Rawflow's Airflow extensions (Airflow loads every module at the top of the plugins folder).

Classes are imported from the ``rawflow_airflow`` package so they keep one import path everywhere: a DAG
serialised with ``rawflow_airflow.timetables.BlockDayTimetable`` finds the same class registered here.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from rawflow_airflow.timetables import BlockDayTimetable


class RawflowPlugin(AirflowPlugin):
    name = "rawflow"
    timetables = [BlockDayTimetable]  # noqa: RUF012 (AirflowPlugin declares it so)
