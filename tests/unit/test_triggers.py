"""Every trigger survives its trip through the triggerer's table (serialize → import → construct), and the
block triggers give up with one typed error event after a bounded number of failed polls."""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rawflow_airflow.triggers.block_activity import BlockActivityTrigger
from rawflow_airflow.triggers.fts3_jobs import Fts3JobsTrigger
from rawflow_airflow.triggers.kafka_backlog import KafkaBacklogTrigger

TRIGGERS: list[Any] = [
    BlockActivityTrigger(
        catalogue_conn_id="rawflow_catalogue",
        data_type="RAW",
        block_id="20260101",
        known_files=14400,
        known_open=True,
        wake_at="2026-01-02T02:00:00+00:00",
        poll_interval=1.5,
        totals={"rounds": 3, "copied": 12, "started_at": "2026-01-01T00:00:00+00:00"},
        max_failed_polls=7,
        timeout_seconds=90.0,
    ),
    Fts3JobsTrigger(
        job_ids=["a-1", "b-2"],
        fts3_conn_id="fts_conn",
        poll_interval=0.5,
        totals={"rounds": 1},
        max_failed_polls=4,
        timeout_seconds=120.0,
    ),
    KafkaBacklogTrigger(kafka_conn_id="rawflow_kafka", topics=["raw.announce"], poll_interval=0.25),
]


@pytest.mark.parametrize("trigger", TRIGGERS, ids=lambda t: type(t).__name__)
def test_serialize_round_trip(trigger: Any) -> None:
    path, kwargs = trigger.serialize()
    json.dumps(kwargs)  # the triggerer stores the arguments as JSON
    module_name, _, class_name = path.rpartition(".")
    rebuilt = getattr(importlib.import_module(module_name), class_name)(**kwargs)
    assert type(rebuilt) is type(trigger)
    assert rebuilt.serialize() == (path, kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _events(trigger: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return await asyncio.wait_for(collect(), timeout)


def test_fts3_trigger_gives_up_after_bounded_failed_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real HTTP client against a port nobody listens on: every poll is refused.
    url = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_FTS_DOWN", json.dumps({"conn_type": "http", "host": url, "password": "t"}))
    trigger = Fts3JobsTrigger(job_ids=["j1"], fts3_conn_id="fts_down", poll_interval=0.05, max_failed_polls=3)
    events = asyncio.run(_events(trigger))
    assert len(events) == 1
    assert events[0]["status"] == "error" and events[0]["permanent"] is False
    assert "3 polls" in events[0]["message"]


def test_block_activity_trigger_fires_on_its_timer_and_reports_catalogue_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from rawflow.catalogue import get_catalogue

    url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    get_catalogue(url).close()
    monkeypatch.setenv("AIRFLOW_CONN_CAT", json.dumps({"conn_type": "generic", "extra": {"url": url}}))
    soon = (datetime.now(UTC) + timedelta(seconds=0.2)).isoformat()
    timer = BlockActivityTrigger(
        catalogue_conn_id="cat",
        data_type="RAW",
        block_id="20260101",
        known_files=0,
        known_open=True,
        wake_at=soon,
        poll_interval=0.05,
        totals={"rounds": 2},
    )
    events = asyncio.run(_events(timer))
    assert [(e["status"], e["reason"], e["totals"]) for e in events] == [("success", "timer", {"rounds": 2})]

    # The catalogue's database vanishes (a directory that does not exist): bounded failures, one error event.
    broken = f"sqlite:///{tmp_path / 'gone' / 'catalogue.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_BROKEN", json.dumps({"conn_type": "generic", "extra": {"url": broken}}))
    failing = BlockActivityTrigger(
        catalogue_conn_id="broken",
        data_type="RAW",
        block_id="20260101",
        known_files=0,
        known_open=True,
        wake_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        poll_interval=0.01,
        max_failed_polls=3,
    )
    events = asyncio.run(_events(failing))
    assert len(events) == 1 and events[0]["status"] == "error", events
