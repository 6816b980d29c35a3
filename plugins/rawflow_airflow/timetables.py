"""BlockDayTimetable: one run per receiving day, starting when the day starts.

A plain ``@daily`` data-interval schedule runs day D's interval at D+1 00:00, after the day is over. Raw
data must flow while the day is running (files registered in the morning reach the destinations in the
morning), so the run for block D is created at D 00:00 with the data interval [D, D+1): the interval is the
block, and the run keeps going (deferred) until the block is closed.
"""

from __future__ import annotations

from typing import Any

from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction
from airflow.timetables.interval import CronDataIntervalTimetable
from pendulum import DateTime


class BlockDayTimetable(CronDataIntervalTimetable):
    description = "one run per receiving day (block), created when the day starts"

    def __init__(self, timezone: str = "UTC") -> None:
        super().__init__("0 0 * * *", timezone)

    @property
    def summary(self) -> str:
        return "daily block (runs from 00:00)"

    def serialize(self) -> dict[str, Any]:
        return {"timezone": str(self._timezone.name)}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> BlockDayTimetable:
        return cls(data.get("timezone", "UTC"))

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        start = self._align_to_prev(run_after)
        return DataInterval(start=start, end=self._get_next(start))

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        if last_automated_data_interval is not None:
            start = last_automated_data_interval.end
        elif restriction.earliest is not None:
            start = self._align_to_next(restriction.earliest)
        else:
            return None
        if not restriction.catchup:
            # Without catch-up the next run is today's block, never an old one.
            start = max(start, self._align_to_prev(DateTime.utcnow().in_timezone("UTC")))
        if restriction.latest is not None and start > restriction.latest:
            return None
        return DagRunInfo(run_after=start, data_interval=DataInterval(start=start, end=self._get_next(start)))
