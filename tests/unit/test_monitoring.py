"""Monitoring rules that need no service: statuses, lag arithmetic, alert text, token extraction, CLI checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from starlette.requests import Request

from rawflow.monitoring import (
    MatrixRow,
    PartitionLag,
    SeriesPoint,
    SiteCell,
    alert_message,
    status_of,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def cell(site: str = "CNAF-STORM", *, assigned: int = 10, processed: int = 10, problematic: int = 0) -> SiteCell:
    return SiteCell(
        block="RAW-20261117",
        data_type="RAW",
        block_id="20261117",
        site=site,
        assigned=assigned,
        processed=processed,
        problematic=problematic,
        pending=assigned - processed - problematic,
        bytes=processed * 1000,
        status=status_of(assigned, processed, problematic),
        last_error="/juno/raw/2026/1117/f.dat: 3 attempts: adler32 mismatch" if problematic else None,
        updated_at=NOW,
        problematic_since=NOW - timedelta(hours=3, minutes=30) if problematic else None,
    )


@pytest.mark.parametrize(
    ("assigned", "processed", "problematic", "expected"),
    [(10, 10, 0, "Processed"), (10, 9, 0, "Assigned"), (10, 9, 1, "Problematic"), (0, 0, 0, "Processed")],
)
def test_status_follows_the_site_progress_rule(assigned: int, processed: int, problematic: int, expected: str) -> None:
    assert status_of(assigned, processed, problematic) == expected


def test_processed_percentage_and_the_worst_status_of_a_row() -> None:
    assert cell(assigned=8, processed=2).processed_pct == 25.0
    assert cell(assigned=0, processed=0).processed_pct == 100.0  # nothing to hold: done
    row = MatrixRow("RAW-20261117", "RAW", "20261117", {"A": cell("A"), "B": cell("B", processed=4)})
    assert row.status == "Assigned"
    row = MatrixRow(
        "RAW-20261117", "RAW", "20261117", {"A": cell("A", processed=4), "B": cell("B", processed=9, problematic=1)}
    )
    assert row.status == "Problematic"
    assert MatrixRow("RAW-20261117", "RAW", "20261117", {"A": cell("A")}).status == "Processed"


@pytest.mark.parametrize(
    ("committed", "low", "high", "lag"),
    [
        (3, 0, 10, 7),
        (None, 0, 10, 10),  # never committed: everything retained is unread
        (None, 4, 10, 6),
        (2, 5, 10, 5),  # committed offset older than the retention: only what is left counts
        (12, 0, 10, 0),  # a broker reporting a low high watermark (Tansu batches) never gives negative lag
        (10, 0, 10, 0),
    ],
)
def test_consumer_lag(committed: int | None, low: int, high: int, lag: int) -> None:
    assert PartitionLag("t", 0, committed, low, high).lag == lag


def test_error_rate() -> None:
    assert SeriesPoint(NOW, "A", good_files=3, good_bytes=3, bad_files=1).error_rate == 0.25
    assert SeriesPoint(NOW, "A", good_files=0, good_bytes=0, bad_files=0).error_rate == 0.0


def test_alert_message_says_what_how_long_and_what_to_do() -> None:
    subject, body = alert_message(cell(processed=7, problematic=3), now=NOW, ui_url="https://airflow.example/rawflow/")
    assert subject == "RAW-20261117 at CNAF-STORM Problematic: 3 of 10 files"
    assert "since 2026-11-20 08:30 UTC (3.5 h)" in body
    assert "processed    7 (70.0 %)" in body
    assert "Last error: /juno/raw/2026/1117/f.dat: 3 attempts: adler32 mismatch" in body
    assert "rawflow block retransfer 20261117 --type RAW --site CNAF-STORM" in body
    assert "Drill-down: https://airflow.example/rawflow/blocks/RAW-20261117" in body
    assert "Drill-down" not in alert_message(cell(problematic=1, processed=9), now=NOW)[1]


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/rawflow/", "headers": raw, "query_string": b""})


def test_the_view_takes_the_bearer_token_before_the_ui_cookie() -> None:
    from rawflow_airflow.ui.auth import _token

    assert _token(_request({"Authorization": "Bearer abc", "Cookie": "_token=cookie"})) == "abc"
    assert _token(_request({"Authorization": "bearer  abc "})) == "abc"
    assert _token(_request({"Cookie": "other=1; _token=cookie"})) == "cookie"
    assert _token(_request({"Authorization": "Bearer ", "Cookie": "_token=cookie"})) == "cookie"
    assert _token(_request({"Authorization": "Basic dXNlcjpwdw=="})) is None
    assert _token(_request({})) is None


def test_human_bytes() -> None:
    from rawflow_airflow.ui.pages import human_bytes

    assert human_bytes(512) == "512 B"
    assert human_bytes(20 * 1024 * 1024) == "20.0 MiB"
    assert human_bytes(3 * 1024**4) == "3.0 TiB"


def test_cli_retransfer_needs_a_site_and_replay_needs_ids(capsys: pytest.CaptureFixture[str]) -> None:
    from rawflow.cli import main

    assert main(["block", "retransfer", "20261117", "--catalogue", "sqlite:///unused.db"]) == 2
    assert "needs --site" in capsys.readouterr().err
    assert main(["quarantine", "replay", "--quarantine", "sqlite:///unused.db", "--bootstrap", "127.0.0.1:1"]) == 2
    assert "at least one message id" in capsys.readouterr().err
