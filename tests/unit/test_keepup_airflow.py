"""The keep-up's Airflow adapters: the trigger's serialize() round trip and bounds, and the DAG's wiring."""

from __future__ import annotations

import asyncio
import importlib
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from unittest.mock import ANY

import pytest

from rawflow_airflow.triggers.compute_jobs import ComputeJobsTrigger


def _rebuild(trigger: ComputeJobsTrigger) -> ComputeJobsTrigger:
    path, kwargs = trigger.serialize()
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    rebuilt: ComputeJobsTrigger = cls(**kwargs)
    return rebuilt


def test_trigger_serialize_round_trip() -> None:
    trigger = ComputeJobsTrigger(
        keys=["raw2rtraw-v1-abc.1", "rec-v1-def.2"],
        compute_conn_id="pool",
        poll_interval=3,
        timeout_seconds=60,
        max_failed_polls=4,
        wake_at=None,
    )
    rebuilt = _rebuild(trigger)
    assert rebuilt.serialize() == trigger.serialize()
    assert rebuilt.keys == ["raw2rtraw-v1-abc.1", "rec-v1-def.2"]
    assert rebuilt.max_failed_polls == 4 and rebuilt.timeout_seconds == 60.0


async def _events(trigger: ComputeJobsTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def test_trigger_without_keys_sleeps_until_the_retry_and_yields_one_event() -> None:
    wake = (datetime.now(UTC) + timedelta(seconds=0.2)).isoformat()
    events = asyncio.run(_events(_rebuild(ComputeJobsTrigger(keys=[], wake_at=wake))))
    assert len(events) == 1
    assert events[0]["status"] == "wake" and events[0]["states"] == {}


def test_trigger_gives_up_after_failed_polls() -> None:
    # No such connection: every poll fails (the hook cannot build a backend); the bound ends the wait.
    trigger = ComputeJobsTrigger(
        keys=["k.1"], compute_conn_id="rawflow_no_such_conn", poll_interval=0.01, max_failed_polls=3
    )
    events = asyncio.run(_events(trigger))
    assert len(events) == 1
    assert events[0]["status"] == "poll_failed"
    assert "3 polls in a row failed" in events[0]["message"]


def test_keepup_dag_is_batched_and_data_driven() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder="dags/rawflow_keepup.py")
    assert bag.import_errors == {}
    dag = bag.dags.get("rawflow_keepup")
    assert dag is not None
    assert sorted(dag.task_ids) == ["blocks", "dqm", "raw2rtraw", "rec"]
    assert [t.task_id for t in dag.get_task("raw2rtraw").downstream_list] == ["rec"]
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"


def test_problematic_files_fail_the_stage_at_once_without_task_retries(monkeypatch: Any) -> None:
    # A task retry cannot help a Problematic file (its jobs were retried already; `rawflow jobs retry` starts
    # them again) and would hold the next stage (trigger_rule all_done) back for the whole retry schedule.
    from airflow.sdk.exceptions import AirflowFailException

    import rawflow.processing.keepup as keepup
    from rawflow.processing.keepup import RoundReport
    from rawflow_airflow.operators.keepup import KeepupOperator, KeepupProblematic

    class Context:
        stages = ("raw2rtraw",)
        catalogue = backend = jobs = None

        def active_jobs(self, block_id: str) -> list[Any]:
            return []

    op = KeepupOperator(task_id="raw2rtraw", block_ids=["20261102"], stages=["raw2rtraw"], retries=3)
    reason = "failed 3 times, last: exit code 3: raw2rtraw: x.dat: truncated in event 4"
    monkeypatch.setattr(op, "_context", Context)
    run_started = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    during, before = run_started + timedelta(minutes=5), run_started - timedelta(days=1)
    problematic = [("raw2rtraw-v1-abc", reason, during), ("raw2rtraw-v1-old", "older reason", before)]
    monkeypatch.setattr(op, "_problematic", lambda: problematic)
    monkeypatch.setattr(keepup, "submit_round", lambda ctx, block_id: RoundReport(block_id=block_id))
    monkeypatch.setattr(keepup, "collect_round", lambda ctx, block_id: RoundReport(block_id=block_id))
    context = {"dag_run": SimpleNamespace(start_date=run_started)}
    with pytest.raises(KeepupProblematic, match=r"1 job\(s\) Problematic.*truncated in event 4") as raised:
        op.execute(context)
    assert isinstance(raised.value, AirflowFailException)
    assert "older reason" not in str(raised.value)


def test_a_file_problematic_since_an_earlier_run_does_not_fail_later_catch_up_runs(monkeypatch: Any) -> None:
    # The run that saw it end Problematic failed; the catch-up runs every 30 min over the same days stay green
    # (the file stays listed by `rawflow jobs list`, the Processing page and the alerts until it is retried).
    import rawflow.processing.keepup as keepup
    from rawflow.processing.keepup import RoundReport
    from rawflow_airflow.operators.keepup import KeepupOperator

    class Context:
        stages = ("raw2rtraw",)
        catalogue = backend = jobs = None

        def active_jobs(self, block_id: str) -> list[Any]:
            return []

    op = KeepupOperator(task_id="raw2rtraw", block_ids=["20261102"], stages=["raw2rtraw"])
    run_started = datetime(2026, 12, 3, 10, 0)  # naive, as SQLite returns it: UTC
    monkeypatch.setattr(op, "_context", Context)
    monkeypatch.setattr(op, "_problematic", lambda: [("raw2rtraw-v1-old", "r", datetime(2026, 12, 2, 9, 0))])
    monkeypatch.setattr(keepup, "submit_round", lambda ctx, block_id: RoundReport(block_id=block_id))
    monkeypatch.setattr(keepup, "collect_round", lambda ctx, block_id: RoundReport(block_id=block_id))
    assert op.execute({"dag_run": SimpleNamespace(start_date=run_started)}) == {"20261102": ANY}
