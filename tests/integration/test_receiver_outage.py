"""Broker outage: the broker goes away for a while and comes back (empty: Tansu keeps its log in memory) on
the same port. The running receiver keeps polling, reconnects by itself and registers what is announced after
the restart. ``RAWFLOW_TEST_BROKER_OUTAGE_S`` sets the outage (default 5 s here; the system tier uses 30 s).

Also: a catalogue outage (its database refusing connections) is transient — nothing quarantined, nothing
committed, and the same messages are registered once the database is back.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from confluent_kafka import Producer

from rawflow.announcer import Announcer
from rawflow.errors import TransientError
from rawflow.grid.broker import Broker, restart_broker, start_broker, stop_broker
from rawflow.grid.postgres import libpq_url, with_database
from rawflow.kafka import Topics, producer_config
from rawflow.receiver import DrainReport
from tests.fixtures.kafka import ReceiverRig, make_kafka_settings

OUTAGE_SECONDS = float(os.environ.get("RAWFLOW_TEST_BROKER_OUTAGE_S", "5"))


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[list[Broker]]:
    """A broker of this test's own (it gets restarted); a list so the test can swap in the restarted one."""
    holder = [start_broker(tmp_path)]
    yield holder
    stop_broker(holder[0])


def wait_for(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_receiver_survives_a_broker_restart(receiver_rig: ReceiverRig, private_broker: list[Broker]) -> None:
    rig = receiver_rig
    broker = private_broker[0]
    rig.settings = make_kafka_settings(broker.bootstrap)
    rig.topics = Topics()  # the project's own topic names, on the private broker
    producer = Producer(producer_config(rig.settings))
    announcer = Announcer(rig.storage, rig.sites.tier0, producer, rig.topics)
    before = announcer.make_files(20, day=rig.day, run=rig.run)
    after = announcer.make_files(20, day=rig.day, run=rig.run, first_sequence=100)
    announcer.write(before + after)

    receiver = rig.receiver()
    seen = DrainReport()
    stop = threading.Event()
    worker = threading.Thread(target=receiver.run_forever, args=(stop,), kwargs={"on_report": seen.merge})
    worker.start()
    try:
        announcer.announce(before)
        assert wait_for(lambda: len(rig.catalogue.get_files([f.lfn for f in before])) == 20, 60)

        stop_broker(broker)
        time.sleep(OUTAGE_SECONDS)
        assert worker.is_alive()  # still polling through the outage
        broker = private_broker[0] = restart_broker(broker)

        announcer.announce(after, flush_timeout=60)
        ok = wait_for(lambda: len(rig.catalogue.get_files([f.lfn for f in after])) == 20, 90)
        assert ok, f"registered after the restart: {len(rig.catalogue.get_files([f.lfn for f in after]))}/20"
        assert wait_for(lambda: seen.accepted == 40, 10), seen.summary()  # reports arrive when a drain ends
        assert seen.rejected == 0
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()
    assert rig.quarantine.count_by_reason() == {}


def _allow_connections(admin_url: str, database_url: str, allow: bool) -> None:
    name = database_url.rsplit("/", 1)[1]
    conn = psycopg2.connect(libpq_url(with_database(admin_url, "postgres")))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allow else "false"}')
        if not allow:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    conn.close()


def test_catalogue_outage_is_transient(receiver_rig: ReceiverRig, pg_url: str) -> None:
    rig = receiver_rig
    files = rig.announcer.make_files(10, day=rig.day, run=rig.run)
    rig.announcer.write(files)
    rig.announcer.announce(files)
    receiver = rig.receiver()
    _allow_connections(pg_url, rig.catalogue_url, False)
    try:
        with pytest.raises(TransientError):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the first polls may come back empty while the group joins
                receiver.drain(100, 1.0)
    finally:
        _allow_connections(pg_url, rig.catalogue_url, True)
    # Nothing committed, nothing quarantined: the same consumer reads the batch again and registers it.
    report = rig.drain_until(receiver, lambda r: r.messages >= 10)
    assert report.accepted == 10 and report.rejected == 0
    assert len(rig.catalogue.get_files([f.lfn for f in files])) == 10
    assert rig.quarantine.count_by_reason() == {}
