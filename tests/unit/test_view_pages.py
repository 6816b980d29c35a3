"""The Rawflow view's pages served in-process on a SQLite catalogue: the plan page, the Kafka page (offsets
explained, each quarantine reason's oldest message, escaped), the drill-down's paging links and site order, and
the throughput of the bucket still in progress."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rawflow.catalogue.base import FileRecord, ReplicaState
from rawflow.catalogue.sql import SqlCatalogue
from rawflow.messages import Reason
from rawflow.monitoring import KafkaStatus, MonitoringStore, PartitionLag
from rawflow.naming import DataType, RawFileName, lfn_for, parse_block_id
from rawflow.quarantine import Quarantine, QuarantineEntry
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


def test_kafka_page_explains_offsets_and_shows_each_reasons_oldest_message(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker's answer (tests/integration/test_monitoring_sql.py reads a real one): partition 0 read up to
    # its end, partition 1 never committed.
    announce = "rawflow.raw.announce"
    partitions = [PartitionLag(announce, 0, 10, 0, 10), PartitionLag(announce, 1, None, 4, 6)]
    monkeypatch.setattr(
        data,
        "kafka_status",
        lambda *args, **kwargs: KafkaStatus("broker:9092", "rawflow-receiver", True, None, partitions),
    )
    quarantine = Quarantine(db)
    quarantine.create_schema()

    def entry(offset: int, reason: Reason, text: str, lfn: str | None, at: datetime) -> QuarantineEntry:
        return QuarantineEntry(announce, 0, offset, None, b"{}", reason, text, lfn=lfn, received_at=at)

    quarantine.add(
        [
            entry(
                1,
                Reason.BAD_CHECKSUM,
                f"{HOSTILE} adler32 zz",
                f"/juno/raw/<b>{DAY}</b>.dat",
                datetime(2026, 11, 23, 8, 0, 1, tzinfo=UTC),
            ),
            entry(
                2, Reason.BAD_CHECKSUM, "adler32 yy", "/juno/raw/later.dat", datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
            ),
            entry(3, Reason.BAD_JSON, "not JSON", None, datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
        ]
    )
    with view_client(SqliteSources(db, kafka_bootstrap="broker:9092")) as client:
        html = client.get("/kafka").text
    assert '<span id="broker" class="cell Processed">reachable</span>' in html
    # Offsets: the caption says what committed and the high watermark are, so "committed = high, lag 0" reads.
    assert "Committed is the next offset the receiver" in html and "lag = high watermark − committed" in html
    assert (
        f'<td>{announce}</td><td>0</td><td>10</td><td>0</td><td>10</td>\n      <td class="cell Processed">0</td>'
        in html
    )
    assert (
        f'<td>{announce}</td><td>1</td><td>(none)</td><td>4</td><td>6</td>\n      <td class="cell Assigned">2</td>'
        in html
    )
    assert '<b id="total-lag">2</b>' in html
    # Quarantine: per reason, how many and the oldest one's time, id, LFN and reason, escaped.
    assert '<span id="quarantined">3</span>' in html
    rows = re.findall(
        r"<tr><td>(\w+)</td><td>(\d+)</td><td>([^<]*)</td>\s*<td>(\d+)</td><td class=\"lfn\">([^<]*)</td>"
        r"<td class=\"error\">([^<]*)</td></tr>",
        html,
    )
    assert rows == [
        (
            "bad_checksum",
            "2",
            "2026-11-23 08:00:01 UTC",
            "1",
            f"/juno/raw/&lt;b&gt;{DAY}&lt;/b&gt;.dat",
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; adler32 zz",
        ),
        ("bad_json", "1", "2026-11-23 10:00:00 UTC", "3", "(none)", "not JSON"),
    ]
    assert HOSTILE not in html and "<b>" not in html.split('id="quarantine"')[1]
    assert "refreshes every 30 s" in html


def test_drill_down_pages_have_first_and_last_links(db: str) -> None:
    def links(html: str) -> dict[str, str]:
        return {label: href for href, label in re.findall(r'<a href="\?([^"]*)">([^<]+)</a>', html)}

    first = page(db, f"/blocks/{BLOCK}", limit=2)
    assert links(first) == {"next →": "limit=2&offset=2", "last ⇥": "limit=2&offset=6"}
    middle = page(db, f"/blocks/{BLOCK}", limit=2, offset=2)
    assert "showing 3–4" in middle
    assert links(middle) == {
        "⇤ first": "limit=2&offset=0",
        "← previous": "limit=2&offset=0",
        "next →": "limit=2&offset=4",
        "last ⇥": "limit=2&offset=6",  # 7 files: the last page holds the 7th alone
    }
    assert links(page(db, f"/blocks/{BLOCK}", limit=2, offset=6)) == {
        "⇤ first": "limit=2&offset=0",
        "← previous": "limit=2&offset=4",
    }
    assert links(page(db, f"/blocks/{BLOCK}", limit=FILES)) == {}  # one page: nothing to page through
    # The links keep the filters: 5 failed files, so the last page starts at the 5th.
    set_state(db, LFNS[:5], "CNAF-STORM", ReplicaState.BAD)
    failed = page(db, f"/blocks/{BLOCK}", limit=2, offset=2, failed_only="true")
    assert links(failed)["last ⇥"] == "failed_only=true&amp;limit=2&offset=4"


def test_drill_down_lists_sites_in_the_policy_order_in_every_table(db: str) -> None:
    # Progress and replicas recorded in the opposite order: the page follows the policy, not the database.
    store = MonitoringStore(db)
    for site in reversed(POLICY_ORDER):
        store.record("RAW", DAY, site, assigned=FILES, processed=1, problematic=0, bytes_done=1000)
    store.close()
    for site in reversed(POLICY_ORDER[1:]):
        set_state(db, LFNS[:1], site, ReplicaState.VALIDATED)
    html = page(db, f"/blocks/{BLOCK}")
    summary, rest = html.split('<form class="filters"')
    filters, files = rest.split('<table id="files"')
    assert re.findall(r"<tr><th>([A-Z0-9-]+)</th>", summary) == POLICY_ORDER
    assert re.findall(r'<option value="([A-Z0-9-]+)"', filters) == POLICY_ORDER
    assert re.findall(r"<th>([^<]+)</th>", files.split("</thead>")[0]) == ["LFN", "Size", "adler32", *POLICY_ORDER]
    with view_client(SqliteSources(db)) as client:
        assert client.get(f"/api/blocks/{BLOCK}").json()["sites"] == POLICY_ORDER


def test_throughput_of_the_current_bucket_is_over_the_time_elapsed(
    db: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10-minute buckets at 12:02: the 11:50 bucket is over (600 s), the 12:00 one has run for 120 s."""
    clock.now = datetime(2026, 11, 23, 11, 55, tzinfo=UTC)
    set_state(db, LFNS[:3], "CNAF-STORM", ReplicaState.VALIDATED)
    clock.now = datetime(2026, 11, 23, 12, 1, tzinfo=UTC)
    set_state(db, LFNS[3:], "CNAF-STORM", ReplicaState.VALIDATED)
    monkeypatch.setattr(data, "utc_now", lambda: datetime(2026, 11, 23, 12, 2, tzinfo=UTC))
    size = {r.lfn: r.size for r in RECORDS}
    series = data.series(SqliteSources(db), hours=1, bucket_minutes=10)
    rates = {(p.bucket, p.site): p.throughput_bytes_per_s for p in series.points}
    assert rates == {
        (datetime(2026, 11, 23, 11, 50, tzinfo=UTC), "CNAF-STORM"): sum(size[lfn] for lfn in LFNS[:3]) / 600,
        (datetime(2026, 11, 23, 12, 0, tzinfo=UTC), "CNAF-STORM"): sum(size[lfn] for lfn in LFNS[3:]) / 120,
    }  # and the Tier-0's registrations at 11:45 are not a throughput
    assert series.since == datetime(2026, 11, 23, 11, 2, tzinfo=UTC) and series.bucket_seconds == 600
