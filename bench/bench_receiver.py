"""DataReceiver throughput (Kafka → registered, messages/s) and publish → registered latency (p50/p99).

    .venv/bin/python bench/bench_receiver.py [--messages 10000] [--rate 500] [--seconds 10] [--json out.json]

Everything is real and local: a Tansu broker, PostgreSQL (RAWFLOW_TEST_PG_URL or a private instance, a fresh
database per phase), the five loopback xrootd sites with the Tier-0 checked through gfal2. The same N announced
files (written once into the Tier-0) are consumed by:

- baseline: a bare confluent-kafka consumer reading the same messages (the ceiling the receiver runs under);
- the receiver with the Tier-0 check off, in SIZE mode (stat) and in FULL mode (stat + server adler32).

Each phase warms up first (group join, connections, gfal2 contexts) on one message, then times N.
Latency: files announced at a steady rate while the receiver runs; latency = the status message's decision time
(taken right after the catalogue commit) minus the announcement's ReceivedAt (taken when it was published).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from rawflow.announcer import Announcer, SyntheticFile  # noqa: E402
from rawflow.catalogue import get_catalogue  # noqa: E402
from rawflow.checks import Limits, StorageCheck  # noqa: E402
from rawflow.grid.broker import Broker, start_broker, stop_broker  # noqa: E402
from rawflow.grid.postgres import create_database, drop_database, postgres_admin_url  # noqa: E402
from rawflow.grid.xrootd import LocalSites, start_sites  # noqa: E402
from rawflow.kafka import KafkaSettings, Topics, consumer_config, ensure_topics, producer_config  # noqa: E402
from rawflow.notify import LogNotifier  # noqa: E402
from rawflow.quarantine import Quarantine  # noqa: E402
from rawflow.receiver import DrainReport, Receiver, make_consumer, make_producer  # noqa: E402
from rawflow.sites import default_sites_path, load_sites  # noqa: E402
from rawflow.storage.gfal2_storage import Gfal2Storage  # noqa: E402

DAY = date(2025, 11, 1)
TARGET = 2000.0


@contextmanager
def local_sites() -> Iterator[LocalSites]:
    state_dir = Path(tempfile.mkdtemp(prefix="rawflow-bench-sites-"))
    state_dir.chmod(0o755)
    sites = start_sites(load_sites(default_sites_path()), state_dir)
    try:
        yield sites
    finally:
        sites.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


class Bench:
    def __init__(self, broker: Broker, admin_url: str, sites: LocalSites, storage: Gfal2Storage) -> None:
        self.broker = broker
        self.admin_url = admin_url
        self.sites = sites.sites_config
        self.storage = storage
        self.databases: list[str] = []

    def settings(self) -> KafkaSettings:
        return KafkaSettings(
            bootstrap=self.broker.bootstrap, group_id=f"bench-{uuid.uuid4().hex[:8]}", session_timeout_ms=6000
        )

    def topics(self, settings: KafkaSettings) -> Topics:
        topics = Topics().with_prefix(f"b{uuid.uuid4().hex[:8]}.")
        ensure_topics(settings, topics)
        return topics

    def publish(self, settings: KafkaSettings, topics: Topics, files: list[SyntheticFile]) -> None:
        producer = Producer(producer_config(settings))
        Announcer(self.storage, self.sites.tier0, producer, topics).announce(files)

    def baseline(self, files: list[SyntheticFile], warmup: SyntheticFile) -> float:
        settings = self.settings()
        topics = self.topics(settings)
        consumer = Consumer(consumer_config(settings))
        consumer.subscribe([topics.raw_announce])
        self.publish(settings, topics, [warmup])
        got = 0
        while got < 1:
            got += sum(m.error() is None for m in consumer.consume(1000, 1.0))
        self.publish(settings, topics, files)
        got = 0
        start = time.perf_counter()
        while got < len(files):
            # The same consume + synchronous commit per batch the receiver does, without the work between.
            batch = [m for m in consumer.consume(1000, 1.0) if m.error() is None]
            got += len(batch)
            offsets: dict[tuple[str, int], int] = {}
            for m in batch:
                key = (m.topic() or "", m.partition() or 0)
                offsets[key] = max(offsets.get(key, 0), (m.offset() or 0) + 1)
            if offsets:
                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
        seconds = time.perf_counter() - start
        consumer.close()
        return len(files) / seconds

    def receiver(self, settings: KafkaSettings, topics: Topics, mode: StorageCheck, parallel: int) -> Receiver:
        url = create_database(self.admin_url, "rawflow_bench")
        self.databases.append(url)
        quarantine = Quarantine(url)
        quarantine.create_schema()
        return Receiver(
            make_consumer(settings, list(topics.announce)),
            get_catalogue(url),
            self.storage,
            self.sites,
            quarantine,
            make_producer(settings),
            LogNotifier(),
            Limits(storage_check=mode, storage_parallel=parallel),
            topics=topics,
        )

    def throughput(self, files: list[SyntheticFile], warmup: SyntheticFile, mode: StorageCheck, parallel: int) -> float:
        settings = self.settings()
        topics = self.topics(settings)
        receiver = self.receiver(settings, topics, mode, parallel)
        self.publish(settings, topics, [warmup])
        done = DrainReport()
        while done.messages < 1:
            done.merge(receiver.drain(1, 1.0))
        self.publish(settings, topics, files)
        report = DrainReport()
        start = time.perf_counter()
        while report.messages < len(files):
            report.merge(receiver.drain(len(files) - report.messages, 1.0, batch_size=1000))
        seconds = time.perf_counter() - start
        assert report.accepted == len(files), report.summary()
        receiver.close()
        receiver.consumer.close()
        return len(files) / seconds

    def latency(self, files: list[SyntheticFile], warmup: SyntheticFile, rate: float, parallel: int) -> list[float]:
        settings = self.settings()
        topics = self.topics(settings)
        receiver = self.receiver(settings, topics, StorageCheck.FULL, parallel)
        self.publish(settings, topics, [warmup])
        done = DrainReport()
        while done.messages < 1:
            done.merge(receiver.drain(1, 1.0))
        stop = threading.Event()
        worker = threading.Thread(
            target=receiver.run_forever, args=(stop,), kwargs={"batch_size": 1000, "timeout": 0.05}
        )
        worker.start()
        producer = Producer(producer_config(settings))
        start = time.perf_counter()
        for i, f in enumerate(files):
            # Publish on schedule; ReceivedAt is the publish time, carried into the status message's lfn.
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            now = datetime.now(UTC).isoformat()
            producer.produce(topics.raw_announce, value=f.payload(ReceivedAt=now), key=f.file_name.encode())
            producer.poll(0)
        producer.flush(30)
        published = {f.lfn for f in files}
        latencies: list[float] = []
        status = Consumer(consumer_config(settings.with_group(f"status-{uuid.uuid4().hex[:8]}")))
        status.subscribe([topics.status])
        deadline = time.monotonic() + 120
        sent_at: dict[str, datetime] = {}
        catalogue = get_catalogue(self.databases[-1])
        while len(latencies) < len(published) and time.monotonic() < deadline:
            for m in status.consume(1000, 0.5):
                if m.error() is not None:
                    continue
                body = json.loads(m.value())
                lfn = body.get("lfn")
                if body["status"] != "accepted" or lfn not in published:
                    continue
                if lfn not in sent_at:
                    record = catalogue.get_file(lfn)
                    assert record is not None
                    sent_at[lfn] = record.received_at
                decided = datetime.fromisoformat(body["at"])
                latencies.append((decided - sent_at[lfn]).total_seconds())
        stop.set()
        worker.join(30)
        status.close()
        catalogue.close()
        receiver.close()
        receiver.consumer.close()
        return latencies

    def cleanup(self) -> None:
        for url in self.databases:
            drop_database(self.admin_url, url)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=200.0, help="announcements/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    parser.add_argument("--storage-parallel", type=int, default=Limits().storage_parallel)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results: dict[str, Any] = {"messages": args.messages, "storage_parallel": args.storage_parallel}
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="rawflow-bench-"))
        stack.callback(shutil.rmtree, work, True)
        print("starting broker, Postgres and the local xrootd sites ...", flush=True)
        broker = start_broker(work)
        stack.callback(stop_broker, broker)
        admin_url = stack.enter_context(postgres_admin_url())
        sites = stack.enter_context(local_sites())
        os.environ.update(sites.client_env)
        storage = Gfal2Storage()
        bench = Bench(broker, admin_url, sites, storage)
        stack.callback(bench.cleanup)

        latency_count = int(args.rate * args.seconds)
        announcer = Announcer(storage, sites.sites_config.tier0, Producer(producer_config(bench.settings())))
        files = announcer.make_files(max(args.messages, latency_count) + 1, day=DAY, run=1, sizes=(1024, 4096))
        warmup, files = files[0], files[1:]
        start = time.perf_counter()
        announcer.write([warmup, *files], parallel=8)
        print(f"wrote {len(files) + 1} files into the Tier-0 in {time.perf_counter() - start:.1f} s", flush=True)
        batch = files[: args.messages]

        results["baseline_msg_s"] = bench.baseline(batch, warmup)
        print(f"baseline confluent-kafka consume: {results['baseline_msg_s']:,.0f} msg/s", flush=True)
        for mode in (StorageCheck.OFF, StorageCheck.SIZE, StorageCheck.FULL):
            rate = bench.throughput(batch, warmup, mode, args.storage_parallel)
            results[f"receiver_{mode.value}_msg_s"] = rate
            verdict = "meets" if rate >= TARGET else "BELOW"
            print(f"receiver, Tier-0 check {mode.value:4}: {rate:,.0f} msg/s ({verdict} the {TARGET:,.0f} target)")
        latencies = bench.latency(files[:latency_count], warmup, args.rate, args.storage_parallel)
        results.update(
            latency_messages=len(latencies),
            latency_rate=args.rate,
            latency_p50_s=statistics.median(latencies),
            latency_p99_s=percentile(latencies, 99),
            latency_max_s=max(latencies),
        )
        print(
            f"publish → registered at {args.rate:.0f} msg/s (Tier-0 check full): "
            f"p50 {results['latency_p50_s'] * 1000:.0f} ms, p99 {results['latency_p99_s'] * 1000:.0f} ms "
            f"({len(latencies)} messages)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
