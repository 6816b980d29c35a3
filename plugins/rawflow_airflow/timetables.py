"""BlockDayTimetable: one run per receiving day, starting when the day starts.

A plain ``@daily`` data-interval schedule runs day D's interval at D+1 00:00, after the day is over. Raw
data must flow while the day is running (files registered in the morning reach the destinations in the
morning), so the run for block D is created at D 00:00 with the data interval [D, D+1): the interval is the
block, and the run keeps going (deferred) until the block is closed.

Days are calendar days in the receiving day's time zone (``[rawflow] receiving_day_timezone`` in Airflow's
configuration, written by ``rawflow grid up`` from ``timezone`` in config/sites.yaml; default UTC): with
Asia/Shanghai, block D's run starts at D 00:00 +08:00 = D-1 16:00 UTC.
"""

from __future__ import annotations

from typing import Any

from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction
from airflow.timetables.interval import CronDataIntervalTimetable
from pendulum import DateTime

from rawflow.naming import receiving_day, receiving_day_bounds

CLOSE_GRACE_HOURS = 2


def receiving_day_timezone() -> str:
    """The configured zone (read from Airflow's already loaded configuration: no I/O at DAG parse)."""
    from airflow.configuration import conf

    return str(conf.get("rawflow", "receiving_day_timezone", fallback="UTC") or "UTC")


class BlockDayTimetable(CronDataIntervalTimetable):
    description = "one run per receiving day (block), created when the day starts"

    def __init__(self, timezone: str | None = None) -> None:
        super().__init__("0 0 * * *", timezone or receiving_day_timezone())

    @property
    def timezone_name(self) -> str:
        return str(self._timezone.name)

    @property
    def summary(self) -> str:
        return f"daily block (runs from 00:00 {self.timezone_name})"

    def block_id(self, instant: Any) -> str:
        """The block (receiving day) of a run: its logical date, or (a manual run without one) its run_after.

        Airflow infers a manual run's data interval from the trigger time, not from ``--logical-date``; the
        logical date is what the operator chose, so the block follows it.
        """
        return f"{receiving_day(instant, self.timezone_name):%Y%m%d}"

    def block_closes_at(self, instant: Any, grace_hours: float = CLOSE_GRACE_HOURS) -> str:
        """When the block of ``instant`` closes: the end of its receiving day plus a grace period (ISO, UTC)."""
        from datetime import timedelta

        _, end = receiving_day_bounds(self.block_id(instant), self.timezone_name)
        return (end + timedelta(hours=grace_hours)).isoformat()

    def serialize(self) -> dict[str, Any]:
        return {"timezone": self.timezone_name}

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
