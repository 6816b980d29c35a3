"""The Rawflow view's pages served in-process on a SQLite catalogue: the plan page."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rawflow.catalogue.base import FileRecord, ReplicaState
from rawflow.catalogue.sql import SqlCatalogue
from rawflow.naming import DataType, RawFileName, lfn_for, parse_block_id
from rawflow_airflow.ui import data
from tests.fixtures.view import SqliteSources, view_client

DAY = "20261123"
BLOCK = f"RAW-{DAY}"
FILES = 7
# config/sites.yaml: the Tier-0, the disk destinations, then the archive.
POLICY_ORDER = ["IHEP-EOS", "CNAF-STORM", "JINR-EOS", "IN2P3-DCACHE", "IHEP-TAPE"]
HOSTILE = "<script>alert('x')</script>"


def raw_file(seq: int) -> FileRecord:
    name = RawFileName.build(
        daq="Daq",
        run_number=1234,
        stream_type="Data",
        stream_name="Physics",
        file_tag="Tag",
        file_time=datetime(2026, 11, 23, 1, 0, seq),
        file_sequence=seq,
        data_type=DataType.RAW,
    ).name
    return FileRecord(
        lfn=lfn_for(DataType.RAW, parse_block_id(DAY), name),
        size=1000 * (seq + 1),
        adler32=f"{seq:08x}",
        data_type=DataType.RAW,
        block_id=DAY,
        run_number=1234,
        stream="Physics",
        received_at=datetime(2026, 11, 23, 1, 0, seq, tzinfo=UTC),
    )


RECORDS = [raw_file(seq) for seq in range(FILES)]
LFNS = sorted(r.lfn for r in RECORDS)


class Clock:
    """The catalogue's clock, so replicas change state at chosen times."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(datetime(2026, 11, 23, 11, 45, tzinfo=UTC))
    monkeypatch.setattr("rawflow.catalogue.sql.utc_now", clock)
    return clock


@pytest.fixture
def db(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The block's files registered at the Tier-0; no Airflow database (no DAG-run links)."""
    monkeypatch.setattr(data, "block_runs", lambda data_type, block_ids: {})
    url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    catalogue = SqlCatalogue(url)
    catalogue.register_files(RECORDS, site="IHEP-EOS")
    catalogue.close()
    yield url


def set_state(url: str, lfns: list[str], site: str, state: ReplicaState) -> None:
    catalogue = SqlCatalogue(url)
    try:
        catalogue.set_replica_state(lfns, site, state)
    finally:
        catalogue.close()


def page(url: str, path: str, **params: Any) -> str:
    with view_client(SqliteSources(url)) as client:
        response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    html: str = response.text
    return html


def test_plan_page_shows_the_dry_run_and_reloads_itself(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_RAWFLOW_MAX_ATTEMPTS", "5")
    html = page(db, f"/blocks/{BLOCK}/plan")
    assert "retry limit 5" in html and f"{FILES} files" in html
    assert f'<td class="files">{FILES}</td>' in html  # CNAF (and the archive): every file, from the Tier-0
    assert f"({FILES} after CNAF-STORM)" in html  # JINR: in the same run, once CNAF holds them
    assert "refreshes every 60 s" in html and "location.reload(); }, 60000)" in html
    assert "location.reload(); }, 20000)" in page(db, f"/blocks/{BLOCK}/plan", refresh=20)
