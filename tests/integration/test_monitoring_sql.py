"""Monitoring queries on real databases (SQLite and a private Postgres), alerts through a real SMTP server,
Kafka lag against the real broker, and the ops CLI's quarantine replay."""

from __future__ import annotations

import email
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import Message
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from confluent_kafka import Consumer, Producer, TopicPartition

from rawflow.catalogue.base import FileRecord, ReplicaState
from rawflow.catalogue.sql import SqlCatalogue
from rawflow.errors import TransientError
from rawflow.grid.process import free_port
from rawflow.kafka import KafkaSettings, Topics, consumer_config, ensure_topics, producer_config
from rawflow.messages import Reason
from rawflow.monitoring import MonitoringStore, kafka_status, quarantine_counts, record_progress, send_due_alerts
from rawflow.naming import DataType, block_id_for, lfn_for
from rawflow.notify import SmtpNotifier
from rawflow.quarantine import Quarantine, QuarantineEntry, QuarantineStatus
from rawflow.sites import Site
from rawflow.validation import SiteProgress

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'monitoring.db'}"
    new_pg_database: Callable[[str], str] = request.getfixturevalue("new_pg_database")
    return new_pg_database("rawflow_monitoring")


@pytest.fixture
def store(db_url: str) -> Iterator[MonitoringStore]:
    store = MonitoringStore(db_url)
    yield store
    store.close()


def make_files(day: date, count: int, size: int = 1000, data_type: DataType = DataType.RAW) -> list[FileRecord]:
    return [
        FileRecord(
            lfn=lfn_for(data_type, day, f"DAQ.000042.ESD.main.tag.{day:%Y%m%d}120000.{n:05d}{data_type.extension}"),
            size=size + n,
            adler32=f"{n:08x}",
            data_type=data_type,
            block_id=block_id_for(day),
            run_number=42,
            stream="ESD",
            received_at=NOW,
        )
        for n in range(count)
    ]


# -- block_site_status ---------------------------------------------------------------------------------------


def test_record_upserts_and_tracks_the_problematic_episode(store: MonitoringStore) -> None:
    block = block_id_for(TODAY)
    store.record("RAW", block, "CNAF-STORM", assigned=10, processed=2, problematic=0, bytes_done=200, now=NOW)
    (cell,) = store.block_cells("RAW", block).values()
    assert (cell.status, cell.pending, cell.problematic_since) == ("Assigned", 8, None)

    first = NOW + timedelta(minutes=5)
    store.record("RAW", block, "CNAF-STORM", assigned=10, processed=8, problematic=2, bytes_done=800, now=first)
    store.record(
        "RAW", block, "CNAF-STORM", assigned=10, processed=8, problematic=2, bytes_done=800, last_error="x: boom",
        now=first + timedelta(minutes=5),
    )  # fmt: skip
    cell = store.block_cells("RAW", block)["CNAF-STORM"]
    # Problematic since the first round that saw it, not the latest one.
    assert (cell.status, cell.problematic_since, cell.last_error) == ("Problematic", first, "x: boom")
    assert cell.updated_at == first + timedelta(minutes=5)
    assert store.mark_alerted(cell.block, "CNAF-STORM", now=first + timedelta(hours=3))

    # Recovery clears the episode (and the alert), so a later one alerts again.
    store.record("RAW", block, "CNAF-STORM", assigned=10, processed=10, problematic=0, bytes_done=1000, now=NOW)
    cell = store.block_cells("RAW", block)["CNAF-STORM"]
    assert (cell.status, cell.problematic_since, cell.alerted_at, cell.processed_pct) == (
        "Processed",
        None,
        None,
        100.0,
    )


def test_record_refuses_inconsistent_counts(store: MonitoringStore) -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        store.record("RAW", "20261120", "CNAF-STORM", assigned=3, processed=3, problematic=1, bytes_done=0)
    assert store.block_cells("RAW", "20261120") == {}


def test_matrix_covers_the_last_n_days_newest_first(store: MonitoringStore) -> None:
    for age in range(10):
        block = block_id_for(TODAY - timedelta(days=age))
        for site in ("IN2P3-DCACHE", "CNAF-STORM"):
            store.record(
                "RAW", block, site, assigned=4, processed=4 if age else 1, problematic=0, bytes_done=4, now=NOW
            )
    store.record("RTRAW", block_id_for(TODAY), "CNAF-STORM", assigned=2, processed=0, problematic=1, bytes_done=0)

    matrix = store.matrix(7, today=NOW)
    assert matrix.first_block_id == block_id_for(TODAY - timedelta(days=6))
    assert matrix.sites == ["CNAF-STORM", "IN2P3-DCACHE"]
    names = [row.block for row in matrix.rows]
    assert len(names) == 8 and names[0].endswith(block_id_for(TODAY))
    assert [r.block_id for r in matrix.rows] == sorted((r.block_id for r in matrix.rows), reverse=True)
    statuses = {row.block: row.status for row in matrix.rows}
    assert statuses[f"RAW-{block_id_for(TODAY)}"] == "Assigned"
    assert statuses[f"RTRAW-{block_id_for(TODAY)}"] == "Problematic"
    assert statuses[f"RAW-{block_id_for(TODAY - timedelta(days=1))}"] == "Processed"
    only_raw = store.matrix(1, data_type="RAW", today=NOW)
    assert [r.block for r in only_raw.rows] == [f"RAW-{block_id_for(TODAY)}"]
    totals = store.totals_by_site()
    assert totals["IN2P3-DCACHE"] == {"assigned": 40, "processed": 37, "problematic": 0, "pending": 3, "bytes": 40}


def test_record_progress_from_a_site_progress(db_url: str, store: MonitoringStore) -> None:
    progress = SiteProgress(
        "JINR-EOS", assigned=5, processed=3, problematic=1, reasons={"/juno/raw/x.dat": "3 attempts"}
    )
    record_progress(db_url, "RAW", "20261120", "JINR-EOS", progress, 12345)
    cell = store.block_cells("RAW", "20261120")["JINR-EOS"]
    assert (cell.assigned, cell.processed, cell.problematic, cell.pending, cell.bytes) == (5, 3, 1, 1, 12345)
    assert cell.last_error == "/juno/raw/x.dat: 3 attempts"
    with pytest.raises(ValueError, match="not CNAF"):
        record_progress(db_url, "RAW", "20261120", "CNAF-STORM", progress, 0)


# -- drill-down and series from the catalogue tables ----------------------------------------------------------


@pytest.fixture
def catalogue(db_url: str) -> Iterator[SqlCatalogue]:
    catalogue = SqlCatalogue(db_url)
    yield catalogue
    catalogue.close()


def test_drill_down_pages_files_with_their_replica_states(catalogue: SqlCatalogue, db_url: str) -> None:
    files = make_files(TODAY, 30)
    other_day = make_files(TODAY - timedelta(days=1), 5)
    catalogue.register_files(files + other_day, site="IHEP-EOS")
    lfns = [f.lfn for f in files]
    catalogue.set_replica_state(lfns[:20], "CNAF-STORM", ReplicaState.VALIDATED)
    catalogue.set_replica_state(lfns[20:25], "CNAF-STORM", ReplicaState.BAD, error="adler32 mismatch")
    catalogue.set_replica_state(lfns[25:], "CNAF-STORM", ReplicaState.COPYING)
    store = MonitoringStore(db_url)  # created after the catalogue: it sees the catalogue tables
    try:
        assert store.has_catalogue_tables
        page = store.drill_down("RAW", block_id_for(TODAY), limit=12, offset=12)
        assert (page.total_files, page.matching_files, page.offset) == (30, 30, 12)
        assert page.sites == ["CNAF-STORM", "IHEP-EOS"]
        assert [f.lfn for f in page.files] == sorted(lfns)[12:24]
        problems = store.drill_down("RAW", block_id_for(TODAY), problems_only=True)
        assert problems.matching_files == 10
        assert {f.lfn for f in problems.files} == set(lfns[20:])
        bad = {f.lfn: f.replicas["CNAF-STORM"] for f in problems.files if f.replicas["CNAF-STORM"].state == "bad"}
        assert len(bad) == 5 and {r.error for r in bad.values()} == {"adler32 mismatch"}
        assert all(f.replicas["IHEP-EOS"].state == "validated" for f in problems.files)
    finally:
        store.close()


def test_drill_down_filters_search_site_failed_and_not_copied_yet(catalogue: SqlCatalogue, db_url: str) -> None:
    from rawflow.monitoring import drill_down_from_catalogue

    files = make_files(TODAY, 12)
    catalogue.register_files(files, site="IHEP-EOS")
    lfns = sorted(f.lfn for f in files)
    catalogue.set_replica_state(lfns[:8], "CNAF-STORM", ReplicaState.VALIDATED)
    catalogue.set_replica_state(lfns[8:10], "CNAF-STORM", ReplicaState.BAD, error="adler32 mismatch")
    catalogue.set_replica_state(lfns[:6], "JINR-EOS", ReplicaState.VALIDATED)  # 6 not copied yet, no replica
    catalogue.set_replica_state(lfns[6:7], "JINR-EOS", ReplicaState.BAD, error="timeout")
    store = MonitoringStore(db_url)
    block = block_id_for(TODAY)
    every = ["CNAF-STORM", "JINR-EOS"]
    try:
        for drill in (
            lambda **kw: store.drill_down("RAW", block, **kw),
            lambda **kw: drill_down_from_catalogue(catalogue, "RAW", block, **kw),
        ):
            # Not done anywhere: CNAF's bad and missing ones, JINR's bad one and those without a replica.
            assert drill(problems_only=True, expected_at=every).matching_files == 6
            assert [f.lfn for f in drill(problems_only=True, site="CNAF-STORM", expected_at=every).files] == lfns[8:]
            assert [f.lfn for f in drill(problems_only=True, site="JINR-EOS", expected_at=every).files] == lfns[6:]
            # Without knowing which sites hold every file, only existing replicas count (the old behaviour).
            assert drill(problems_only=True).matching_files == 3
            assert [f.lfn for f in drill(failed_only=True).files] == lfns[6:7] + lfns[8:10]
            assert [f.lfn for f in drill(failed_only=True, site="JINR-EOS").files] == lfns[6:7]
            needle = lfns[3].rsplit("/", 1)[1]
            found = drill(search=needle)
            assert (found.matching_files, [f.lfn for f in found.files]) == (1, [lfns[3]])
            assert drill(search="no such file").matching_files == 0
            assert drill(search="%").matching_files == 0  # a literal, not a LIKE wildcard
    finally:
        store.close()


def test_not_done_at_a_partial_share_site_counts_only_its_share(catalogue: SqlCatalogue, db_url: str) -> None:
    """IN2P3 keeps a third of each block: its files without a replica are not done, the other two thirds are."""
    from rawflow.monitoring import drill_down_from_catalogue

    files = make_files(TODAY, 30)
    catalogue.register_files(files, site="IHEP-EOS")
    in2p3 = Site(name="IN2P3-DCACHE", role="disk", url_prefix="root://in2p3//pnfs", share=Fraction(1, 3))
    share = sorted(f.lfn for f in files if in2p3.keeps(f.lfn))
    assert 0 < len(share) < len(files)
    catalogue.set_replica_state(share[:2], "IN2P3-DCACHE", ReplicaState.VALIDATED)
    catalogue.set_replica_state(share[2:3], "IN2P3-DCACHE", ReplicaState.BAD, error="timeout")
    store = MonitoringStore(db_url)
    block = block_id_for(TODAY)
    try:
        for drill in (
            lambda **kw: store.drill_down("RAW", block, **kw),
            lambda **kw: drill_down_from_catalogue(catalogue, "RAW", block, **kw),
        ):
            view = drill(problems_only=True, site="IN2P3-DCACHE", assigned_at=[in2p3], limit=100)
            assert [f.lfn for f in view.files] == share[2:]
            assert view.matching_files == len(share) - 2
            # Without the share only the existing bad replica shows (files outside the share are never counted).
            assert drill(problems_only=True, site="IN2P3-DCACHE").matching_files == 1
    finally:
        store.close()


def test_time_series_buckets_good_bytes_and_bad_files(catalogue: SqlCatalogue, db_url: str) -> None:
    files = make_files(TODAY, 10, size=1000)
    catalogue.register_files(files, site="IHEP-EOS")
    catalogue.set_replica_state([f.lfn for f in files[:6]], "IN2P3-DCACHE", ReplicaState.VALIDATED)
    catalogue.set_replica_state([f.lfn for f in files[6:8]], "IN2P3-DCACHE", ReplicaState.BAD, error="gone")
    catalogue.set_replica_state([f.lfn for f in files[8:]], "IN2P3-DCACHE", ReplicaState.COPYING)
    store = MonitoringStore(db_url)
    try:
        start = datetime.now(UTC) - timedelta(hours=1)
        points = {p.site: p for p in store.time_series(start, timedelta(minutes=10))}
        dcache = points["IN2P3-DCACHE"]
        assert (dcache.good_files, dcache.good_bytes, dcache.bad_files) == (6, sum(f.size for f in files[:6]), 2)
        assert dcache.error_rate == pytest.approx(0.25)
        assert dcache.bucket.timestamp() % 600 == 0 and dcache.bucket <= datetime.now(UTC)
        assert points["IHEP-EOS"].good_files == 10
        assert store.time_series(datetime.now(UTC) + timedelta(minutes=1)) == []
        counts = store.replica_counts()
        assert counts[("IN2P3-DCACHE", "bad")] == (2, files[6].size + files[7].size)
        assert counts[("IHEP-EOS", "validated")][0] == 10
    finally:
        store.close()


# -- alerts through a real SMTP server ------------------------------------------------------------------------


@dataclass
class Sink:
    messages: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Sink]]:
    sink, port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, sink
    controller.stop()


def test_one_email_per_block_and_site_past_the_deadline(store: MonitoringStore, smtp: tuple[int, Sink]) -> None:
    port, sink = smtp
    notifier = SmtpNotifier(host="127.0.0.1", port=port, from_addr="rawflow@localhost", to_addrs=["shift@localhost"])
    old = NOW - timedelta(hours=3)
    for site in ("CNAF-STORM", "JINR-EOS"):
        store.record(
            "RAW", "20261117", site, assigned=9, processed=6, problematic=3, bytes_done=6, last_error="e", now=old
        )
    store.record("RAW", "20261119", "CNAF-STORM", assigned=9, processed=8, problematic=1, bytes_done=8, now=NOW)
    store.record("RAW", "20261118", "CNAF-STORM", assigned=9, processed=9, problematic=0, bytes_done=9, now=old)

    sent = send_due_alerts(store, notifier, timedelta(hours=2), now=NOW, ui_url="http://airflow/rawflow")
    assert sorted((c.block, c.site) for c in sent) == [("RAW-20261117", "CNAF-STORM"), ("RAW-20261117", "JINR-EOS")]
    assert len(sink.messages) == 2
    message = sink.messages[0]
    assert "RAW-20261117" in message["Subject"] and "Problematic: 3 of 9 files" in message["Subject"]
    body = message.get_payload()
    assert "http://airflow/rawflow/blocks/RAW-20261117" in body and "rawflow block retransfer 20261117" in body

    # The next runs send nothing more; the younger episode alerts once it passes the deadline.
    assert send_due_alerts(store, notifier, timedelta(hours=2), now=NOW + timedelta(minutes=5)) == []
    later = send_due_alerts(store, notifier, timedelta(hours=2), now=NOW + timedelta(hours=2, minutes=1))
    assert [(c.block, c.site) for c in later] == [("RAW-20261119", "CNAF-STORM")]
    assert len(sink.messages) == 3
    assert store.due_alerts(timedelta(0), now=NOW + timedelta(days=1)) == []


def test_a_failed_send_is_retried_by_the_next_run(store: MonitoringStore, smtp: tuple[int, Sink]) -> None:
    port, sink = smtp
    store.record("RAW", "20261117", "CNAF-STORM", assigned=2, processed=0, problematic=2, bytes_done=0, now=NOW)
    down = SmtpNotifier(host="127.0.0.1", port=free_port(), from_addr="r@localhost", to_addrs=["s@localhost"])
    with pytest.raises(TransientError, match="1 alert"):
        send_due_alerts(store, down, timedelta(0), now=NOW)
    assert [c.alerted_at for c in store.due_alerts(timedelta(0), now=NOW)] == [None]
    up = SmtpNotifier(host="127.0.0.1", port=port, from_addr="r@localhost", to_addrs=["s@localhost"])
    assert len(send_due_alerts(store, up, timedelta(0), now=NOW)) == 1
    assert len(sink.messages) == 1


# -- quarantine and Kafka --------------------------------------------------------------------------------------


def _quarantine_entries(topic: str, n: int) -> list[QuarantineEntry]:
    return [
        QuarantineEntry(topic, 0, offset, None, f'{{"n": {offset}}}'.encode(), Reason.BAD_JSON, "not JSON")
        for offset in range(n)
    ]


def test_quarantine_counts(db_url: str) -> None:
    assert quarantine_counts(db_url) == {}  # no table yet: nothing quarantined
    quarantine = Quarantine(db_url)
    quarantine.create_schema()
    quarantine.add(_quarantine_entries("t", 3))
    assert quarantine_counts(db_url) == {Reason.BAD_JSON.value: 3}


def test_consumer_lag_is_high_watermark_minus_committed(kafka_settings: KafkaSettings) -> None:
    topics = Topics().with_prefix(f"lag{uuid.uuid4().hex[:8]}.")
    ensure_topics(kafka_settings, topics)
    producer = Producer(producer_config(kafka_settings))
    for n in range(7):
        producer.produce(topics.raw_announce, value=b"x", partition=n % 2)
        # One batch per message: Tansu 0.6 reports a partition's high watermark as its last *batch's* base
        # offset + 1, so a multi-message batch would make the lag look smaller than it is.
        assert producer.flush(10) == 0
    group = f"lag-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(consumer_config(kafka_settings.with_group(group)))
    try:  # the receiver's way: commit offsets by hand
        consumer.commit(offsets=[TopicPartition(topics.raw_announce, 0, 3)], asynchronous=False)
    finally:
        consumer.close()

    status = kafka_status(kafka_settings.bootstrap, group, topics.announce)
    assert status.reachable and status.error is None
    by_partition = {(p.topic, p.partition): p for p in status.partitions}
    assert len(by_partition) == 2 * kafka_settings.partitions
    first = by_partition[(topics.raw_announce, 0)]
    assert (first.committed, first.high, first.lag) == (3, 4, 1)
    second = by_partition[(topics.raw_announce, 1)]
    assert (second.committed, second.high, second.lag) == (None, 3, 3)
    assert status.total_lag == 4


def test_unreachable_broker_is_reported_not_raised() -> None:
    started = time.monotonic()
    status = kafka_status(f"127.0.0.1:{free_port()}", "rawflow-receiver", Topics().announce, timeout=1.0)
    assert not status.reachable and status.partitions == [] and status.error
    assert time.monotonic() - started < 10


def test_cli_quarantine_replay_republishes_and_marks_replayed(
    kafka_settings: KafkaSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rawflow.cli import main

    url = f"sqlite:///{tmp_path / 'quarantine.db'}"
    quarantine = Quarantine(url)
    quarantine.create_schema()
    quarantine.add(_quarantine_entries("original", 2))
    first, second = (m.id for m in quarantine.list())
    target = f"replay-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_settings, Topics(target, f"{target}.b", f"{target}.c", f"{target}.d"))
    code = main(["quarantine", "replay", str(second), "--quarantine", url, "--bootstrap", kafka_settings.bootstrap,
                 "--topic", target, "--json"])  # fmt: skip
    assert code == 0 and '"replayed": 1' in capsys.readouterr().out
    from tests.fixtures.kafka import read_topic

    (message,) = read_topic(kafka_settings, target, expected=1, timeout=20)
    assert message.value() == b'{"n": 1}'  # type: ignore[attr-defined]
    statuses = {m.id: m.status for m in quarantine.list(status=None)}
    assert statuses == {first: QuarantineStatus.QUARANTINED, second: QuarantineStatus.REPLAYED}
    assert main(["quarantine", "replay", "--quarantine", url, "--bootstrap", kafka_settings.bootstrap]) == 2
