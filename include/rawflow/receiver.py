"""The DataReceiver: Kafka announcements → checks → catalogue registration, with nothing lost.

One batch is: poll → check each message → check the files at the Tier-0 (in parallel) → register the good
ones in ONE catalogue call → quarantine rows + dead letters + status messages → flush the producer →
commit the offsets synchronously. Offsets are committed only after the catalogue commit, and registration
is idempotent, so a crash anywhere replays the batch with the same effect (at-least-once delivery,
exactly-once effect). A transient fault (catalogue, storage, broker) rewinds the consumer to the batch's
first offsets and raises :class:`TransientError`: nothing is quarantined for it, the batch is tried again.

``python -m rawflow.receiver`` runs :meth:`Receiver.run_forever` as a standalone daemon.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol

import sqlalchemy as sa
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from rawflow.catalogue.base import BlockClosedError, FileRecord, RegisterResult
from rawflow.checks import (
    BatchVerdict,
    Limits,
    StorageCheck,
    Tier0Facts,
    check_day,
    check_message,
    check_size,
    compare_with_tier0,
    dedupe,
    tier0_facts,
    tier0_root,
)
from rawflow.errors import InvalidNameError, RawflowError, StorageNotFoundError, TransientError
from rawflow.kafka import DeliveryTracker, KafkaSettings, Topics, consumer_config, ensure_topics, producer_config
from rawflow.messages import (
    Announcement,
    Outcome,
    Reason,
    Rejection,
    dead_letter_headers,
    status_payload,
)
from rawflow.naming import DataType, RawFilePath, block_directory_lfn, block_name
from rawflow.notify import LogNotifier, Notifier, SmtpNotifier
from rawflow.quarantine import Quarantine, QuarantineEntry
from rawflow.sites import Site, SitesConfig, load_sites
from rawflow.storage.base import Storage

log = logging.getLogger("rawflow.receiver")


class CatalogueAPI(Protocol):
    """The part of the catalogue the receiver uses."""

    def register_files(self, files: Sequence[FileRecord], *, site: str) -> RegisterResult: ...

    def get_files(self, lfns: Iterable[str]) -> Mapping[str, FileRecord]: ...


@dataclass(slots=True)
class DrainReport:
    messages: int = 0
    batches: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    # Newly registered in this drain, per block name (e.g. "RAW-20251101").
    registered_lfns_by_block: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # Every block an accepted or duplicate announcement belongs to: after a retried batch, files registered
    # by the failed attempt show up here as duplicates, so downstream triggers are not lost.
    blocks_seen: set[str] = field(default_factory=set)
    quarantined: int = 0
    notifications: int = 0
    committed: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def merge(self, other: DrainReport) -> DrainReport:
        """Add ``other``'s counts to this report (for callers that drain several times)."""
        self.messages += other.messages
        self.batches += other.batches
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected_by_reason.update(other.rejected_by_reason)
        for block, lfns in other.registered_lfns_by_block.items():
            self.registered_lfns_by_block.setdefault(block, []).extend(lfns)
        self.blocks_seen |= other.blocks_seen
        self.quarantined += other.quarantined
        self.notifications += other.notifications
        self.committed.update(other.committed)
        return self

    def summary(self) -> str:
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(self.rejected_by_reason.items()))
        return (
            f"{self.messages} messages in {self.batches} batches: {self.accepted} registered, "
            f"{self.duplicates} duplicates, {self.rejected} rejected" + (f" ({reasons})" if reasons else "")
        )


@dataclass(slots=True, eq=False)
class _Item:
    msg: Message
    announcement: Announcement | None = None
    rejection: Rejection | None = None
    outcome: Outcome | None = None

    def reject(self, rejection: Rejection) -> None:
        self.rejection, self.outcome = rejection, Outcome.REJECTED


class Receiver:
    def __init__(
        self,
        consumer: Consumer,
        catalogue: CatalogueAPI,
        storage: Storage,
        sites: SitesConfig,
        quarantine: Quarantine,
        producer: Producer,
        notifier: Notifier,
        limits: Limits | None = None,
        *,
        topics: Topics | None = None,
        flush_timeout: float = 30.0,
        storage_alert_interval: float = 900.0,
    ) -> None:
        self.consumer = consumer
        self.catalogue = catalogue
        self.storage = storage
        self.sites = sites
        self.tier0: Site = sites.tier0
        self.quarantine = quarantine
        self.producer = producer
        self.notifier = notifier
        limits = limits or Limits()
        if limits.tier0_root is None:
            limits = replace(limits, tier0_root=tier0_root(self.tier0))
        if limits.timezone is None:
            # The receiving day's zone of the site policy: the block DAG's timetable, the view and the CLI cut
            # days in the same zone (a file whose directory is another day there is quarantined).
            limits = replace(limits, timezone=sites.timezone)
        self.limits = limits
        self.topics = topics or Topics()
        self.flush_timeout = flush_timeout
        self.storage_alert_interval = storage_alert_interval
        self._last_storage_alert = -float("inf")
        self._delivery = DeliveryTracker()
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop the storage-check threads (the consumer and producer belong to the caller)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _checker_pool(self) -> ThreadPoolExecutor | None:
        if self.limits.storage_parallel <= 1:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.limits.storage_parallel, thread_name_prefix="tier0-check")
        return self._pool

    # --- one run -----------------------------------------------------------------------------------

    def drain(self, max_messages: int = 10000, timeout: float = 1.0, *, batch_size: int = 1000) -> DrainReport:
        """Process up to ``max_messages``, batch by batch, until a poll of ``timeout`` seconds brings nothing."""
        report = DrainReport()
        while report.messages < max_messages:
            batch = self._poll(min(batch_size, max_messages - report.messages), timeout)
            if not batch:
                break
            self.process_batch(batch, report)
        return report

    def _poll(self, count: int, timeout: float) -> list[Message]:
        batch = []
        for msg in self.consumer.consume(count, timeout):
            error = msg.error()
            if error is None:
                batch.append(msg)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("Kafka consumer: %s", error)
        return batch

    def process_batch(self, batch: Sequence[Message], report: DrainReport | None = None) -> DrainReport:
        """Check, register and commit one polled batch. On a transient fault, rewind and raise."""
        report = report if report is not None else DrainReport()
        try:
            critical = self._process(batch, report)
        except TransientError:
            self._rewind(batch)
            raise
        for subject, body in critical:
            self._notify(subject, body, report)
        return report

    def _process(self, batch: Sequence[Message], report: DrainReport) -> list[tuple[str, str]]:
        clock = _StageClock()
        items = [self._check_message(msg) for msg in batch]
        parsed = [i for i in items if i.announcement is not None and i.rejection is None]
        clock.lap("parse")
        self._check_tier0(parsed)
        clock.lap("tier0")
        to_register = self._dedupe(parsed)
        self._register(to_register, parsed, report)
        clock.lap("catalogue")

        entries = [self._quarantine_entry(i) for i in items if i.rejection is not None]
        report.quarantined += self.quarantine.add(entries)
        clock.lap("quarantine")
        for item in items:
            self._publish(item)
        self._delivery.flush(self.producer, self.flush_timeout)
        clock.lap("produce")
        self._commit(batch, report)
        clock.lap("commit")
        log.debug("batch of %d: %s", len(batch), clock)

        report.messages += len(batch)
        report.batches += 1
        critical = [i for i in items if i.rejection is not None and i.rejection.reason.critical]
        for item in items:
            if item.outcome is Outcome.ACCEPTED:
                report.accepted += 1
            elif item.outcome is Outcome.DUPLICATE:
                report.duplicates += 1
            elif item.rejection is not None:
                report.rejected_by_reason[item.rejection.reason.value] += 1
        if not critical:
            return []
        lines = [f"- {i.rejection.reason.value}: {i.rejection.text}" for i in critical if i.rejection is not None]
        subject = f"DataReceiver: {len(critical)} critical rejection(s) at {self.tier0.name}"
        body = "These announcements were rejected and quarantined:\n\n" + "\n".join(lines[:200])
        return [(subject, body)]

    def _check_message(self, msg: Message) -> _Item:
        item = _Item(msg=msg)
        try:
            item.announcement = check_message(
                msg.value(), topic_type=self.topics.type_of(msg.topic() or ""), limits=self.limits
            )
        except Rejection as rejection:
            item.reject(rejection)
        return item

    def _check_tier0(self, items: Sequence[_Item]) -> None:
        lfns = [i.announcement.lfn for i in items if i.announcement is not None]
        facts = tier0_facts(
            self.storage,
            self.tier0,
            lfns,
            mode=self.limits.storage_check,
            parallel=self.limits.storage_parallel,
            executor=self._checker_pool(),
        )
        failed = [f for f in facts.values() if f.transient]
        if failed:
            if len(failed) == len(facts):
                self._storage_down_alert(failed)
            raise TransientError(
                f"Tier-0 {self.tier0.name}: {len(failed)} of {len(facts)} file checks failed, e.g. {failed[0].error}"
            )
        for item in items:
            assert item.announcement is not None
            found = facts.get(item.announcement.lfn)
            rejection = compare_with_tier0(item.announcement, found) if found is not None else None
            if rejection is not None:
                item.reject(rejection)

    def _storage_down_alert(self, failed: Sequence[Tier0Facts]) -> None:
        now = time.monotonic()
        if now - self._last_storage_alert < self.storage_alert_interval:
            return
        self._last_storage_alert = now
        self._notify(
            f"DataReceiver: Tier-0 {self.tier0.name} unreachable",
            f"Every file check of a batch of {len(failed)} failed; the batch will be retried.\n"
            f"First error: {failed[0].error}",
            None,
        )

    def _dedupe(self, items: Sequence[_Item]) -> list[_Item]:
        good = [i for i in items if i.rejection is None]
        verdicts = dedupe([i.announcement for i in good if i.announcement is not None])
        first = []
        for item, (verdict, rejection) in zip(good, verdicts, strict=True):
            if verdict is BatchVerdict.FIRST:
                first.append(item)
            elif verdict is BatchVerdict.DUPLICATE:
                item.outcome = Outcome.DUPLICATE
            elif rejection is not None:
                item.reject(rejection)
        return first

    def _record(self, item: _Item) -> FileRecord:
        a = item.announcement
        assert a is not None
        received = a.received_at or _kafka_time(item.msg) or datetime.now(UTC)
        return FileRecord(
            lfn=a.lfn,
            size=a.size,
            adler32=a.checksum,
            data_type=a.data_type,
            block_id=a.block_id,
            run_number=a.path.file.run_number,
            stream=a.stream,
            received_at=received,
        )

    def _register(self, first: Sequence[_Item], parsed: Sequence[_Item], report: DrainReport) -> None:
        pending = list(first)
        result = None
        while pending:
            try:
                records = [self._record(i) for i in pending]
                result = CatalogueCall(self.catalogue).register(records, site=self.tier0.name)
                break
            except BlockClosedError as exc:
                # Nothing was written: set the closed block's files aside and register the rest.
                late = [i for i in pending if i.announcement is not None and i.announcement.block == exc.block]
                if not late:
                    raise
                for item in late:
                    lfn = item.announcement.lfn if item.announcement is not None else "?"
                    item.reject(Rejection(Reason.BLOCK_CLOSED, f"{lfn}: block {exc.block} is closed"))
                pending = [i for i in pending if i.rejection is None]
        if result is not None:
            self._apply(result, pending, report)
        # A batch duplicate shares its first announcement's fate in the catalogue.
        leaders = {i.announcement.lfn: i for i in first if i.announcement is not None}
        for item in parsed:
            if item.outcome is Outcome.DUPLICATE and item.announcement is not None:
                leader = leaders[item.announcement.lfn]
                if leader is not item and leader.rejection is not None:
                    item.reject(leader.rejection)
        for item in first:
            if item.announcement is not None and item.rejection is None:
                report.blocks_seen.add(item.announcement.block)

    def _apply(self, result: RegisterResult, registered: Sequence[_Item], report: DrainReport) -> None:
        conflicts = {lfn: (have, offered) for lfn, have, offered in result.conflicts}
        added = set(result.added)
        for item in registered:
            a = item.announcement
            assert a is not None
            if a.lfn in conflicts:
                have, offered = conflicts[a.lfn]
                text = f"{a.lfn} is registered with adler32 {have}, announced again with {offered}"
                item.reject(Rejection(Reason.CONFLICT, text))
            elif a.lfn in added:
                item.outcome = Outcome.ACCEPTED
                report.registered_lfns_by_block[a.block].append(a.lfn)
            else:
                item.outcome = Outcome.DUPLICATE

    def _quarantine_entry(self, item: _Item) -> QuarantineEntry:
        assert item.rejection is not None
        msg = item.msg
        return QuarantineEntry(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=msg.key(),
            payload=msg.value(),
            reason=item.rejection.reason,
            text=item.rejection.text,
            lfn=item.announcement.lfn if item.announcement is not None else item.rejection.lfn,
            received_at=_kafka_time(item.msg),
        )

    def _publish(self, item: _Item) -> None:
        msg = item.msg
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        a = item.announcement
        if item.rejection is not None:
            self._produce(
                self.topics.deadletter,
                msg.value() or b"",
                msg.key(),
                dead_letter_headers(
                    item.rejection.reason,
                    item.rejection.text,
                    source_topic=topic,
                    partition=partition,
                    offset=offset,
                    payload=msg.value(),
                ),
            )
        outcome = item.outcome or Outcome.REJECTED
        status = status_payload(
            outcome,
            source_topic=topic,
            partition=partition,
            offset=offset,
            lfn=a.lfn if a is not None else (item.rejection.lfn if item.rejection is not None else None),
            block=a.block if a is not None else None,
            reason=item.rejection.reason if item.rejection is not None else None,
            text=item.rejection.text if item.rejection is not None else None,
        )
        self._produce(self.topics.status, status, msg.key(), None)

    def _produce(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, str | bytes | None]] | None
    ) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._delivery)
                return
            except BufferError:
                # The local queue is full: let librdkafka send some, then try again.
                self.producer.poll(0.1)
            except KafkaException as exc:
                raise TransientError(f"producing to {topic}: {exc}") from exc

    def _commit(self, batch: Sequence[Message], report: DrainReport) -> None:
        offsets: dict[tuple[str, int], int] = {}
        for msg in batch:
            key = (msg.topic() or "", msg.partition() or 0)
            offsets[key] = max(offsets.get(key, -1), (msg.offset() or 0) + 1)
        try:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
        except KafkaException as exc:
            # E.g. a rebalance took the partition away: the new owner re-reads the batch, idempotently.
            raise TransientError(f"committing offsets: {exc}") from exc
        report.committed.update(offsets)

    def _rewind(self, batch: Sequence[Message]) -> None:
        """Seek back to each partition's first offset in the batch, so the retry reads it again."""
        first: dict[tuple[str, int], int] = {}
        for msg in batch:
            key = (msg.topic() or "", msg.partition() or 0)
            first[key] = min(first.get(key, msg.offset() or 0), msg.offset() or 0)
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # Partition no longer ours (rebalance): its new owner starts from the committed offset.
                log.warning("rewinding %s[%d] to %d: %s", topic, partition, offset, exc)

    def _notify(self, subject: str, body: str, report: DrainReport | None) -> None:
        try:
            self.notifier.notify(subject, body)
            if report is not None:
                report.notifications += 1
        except RawflowError as exc:
            log.error("could not notify (%s): %s", exc, subject)

    # --- long-running ------------------------------------------------------------------------------

    def run_forever(
        self,
        stop: threading.Event,
        *,
        batch_size: int = 1000,
        timeout: float = 1.0,
        max_backoff: float = 30.0,
        on_report: Callable[[DrainReport], None] | None = None,
    ) -> None:
        """Drain until ``stop`` is set. Transient faults back off and retry; librdkafka reconnects by itself."""
        backoff = 0.5
        failing = False
        while not stop.is_set():
            try:
                report = self.drain(batch_size, timeout, batch_size=batch_size)
            except TransientError as exc:
                log.warning("transient failure, retrying in %.1f s: %s", backoff, exc)
                failing = True
                stop.wait(backoff)
                backoff = min(backoff * 2, max_backoff)
                continue
            if failing:
                log.info("recovered: processing again")
                failing, backoff = False, 0.5
            if report.messages:
                log.info("%s", report.summary())
                if on_report is not None:
                    on_report(report)


class _StageClock:
    """Seconds spent per stage of a batch (logged at DEBUG: where the time goes when throughput drops)."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.laps: list[tuple[str, float]] = []

    def lap(self, stage: str) -> None:
        now = time.monotonic()
        self.laps.append((stage, now - self.last))
        self.last = now

    def __str__(self) -> str:
        return " ".join(f"{stage}={seconds:.3f}s" for stage, seconds in self.laps)


def _kafka_time(msg: Message) -> datetime | None:
    kind, millis = msg.timestamp()
    if kind == 0 or millis is None or millis <= 0:  # TIMESTAMP_NOT_AVAILABLE
        return None
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


# --- reconciliation ----------------------------------------------------------------------------------


@dataclass(slots=True)
class ReconcileReport:
    block: str
    listed: int = 0
    already_registered: int = 0
    recovered: int = 0
    rejected: int = 0
    skipped: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    recovered_lfns: list[str] = field(default_factory=list)


class Reconciler:
    """Registers files that sit in a block's Tier-0 directory but never reached the catalogue
    (announcement lost, broker restarted empty). Sizes and checksums come from the storage element; names,
    sizes and the receiving day (directory against FileTime, in the site policy's zone) are checked as the
    receiver checks them, and a file that fails is quarantined."""

    def __init__(
        self,
        catalogue: CatalogueAPI,
        storage: Storage,
        sites: SitesConfig,
        quarantine: Quarantine,
        notifier: Notifier,
        limits: Limits | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.storage = storage
        self.tier0 = sites.tier0
        self.quarantine = quarantine
        self.notifier = notifier
        limits = limits or Limits()
        # The receiver's day check applies here too: a file filed under another day than its FileTime's is
        # quarantined, not registered behind the receiver's back.
        self.limits = limits if limits.timezone is not None else replace(limits, timezone=sites.timezone)

    @property
    def timezone(self) -> str:
        """The receiving day's time zone the reconciliation checks directories against."""
        return self.limits.timezone or "UTC"

    def reconcile_block(self, data_type: DataType, block_id: str) -> ReconcileReport:
        block = block_name(data_type, block_id)
        report = ReconcileReport(block=block)
        directory = block_directory_lfn(data_type, block_id)
        try:
            names = self.storage.listdir(self.tier0.pfn(directory))
        except StorageNotFoundError:
            return report
        report.listed = len(names)
        # Dot-files are transfers still in flight into the Tier-0; they are not files yet.
        candidates = [f"{directory}/{n}" for n in names if not n.startswith(".")]
        report.skipped = len(names) - len(candidates)
        registered = set(CatalogueCall(self.catalogue).get_files(candidates))
        report.already_registered = len(registered)
        missing = [lfn for lfn in candidates if lfn not in registered]

        rejections: dict[str, Rejection] = {}
        paths: dict[str, RawFilePath] = {}
        for lfn in missing:
            try:
                paths[lfn] = check_day(RawFilePath.parse(lfn), self.timezone)
            except InvalidNameError as exc:
                rejections[lfn] = Rejection(Reason.BAD_NAME, str(exc))
            except Rejection as exc:
                rejections[lfn] = exc
        facts = tier0_facts(
            self.storage, self.tier0, list(paths), mode=StorageCheck.FULL, parallel=self.limits.storage_parallel
        )
        failed = [f for f in facts.values() if f.transient]
        if failed:
            raise TransientError(f"reconciling {block}: {len(failed)} file checks failed, e.g. {failed[0].error}")
        records = []
        for lfn, path in paths.items():
            found = facts[lfn]
            if not found.exists:
                report.skipped += 1  # a directory, or gone since the listing
                continue
            try:
                check_size(found.size or 0, self.limits)
            except Rejection as size_problem:
                rejections[lfn] = size_problem
                continue
            records.append(
                FileRecord(
                    lfn=lfn,
                    size=found.size or 0,
                    adler32=found.adler32 or "",
                    data_type=path.data_type,
                    block_id=path.block_id,
                    run_number=path.file.run_number,
                    stream=path.file.stream_name,
                    received_at=datetime.now(UTC),
                )
            )
        if records:
            result = CatalogueCall(self.catalogue).register(records, site=self.tier0.name)
            added = set(result.added)
            for lfn, have, offered in result.conflicts:
                rejections[lfn] = Rejection(
                    Reason.CONFLICT, f"{lfn}: catalogue has adler32 {have}, the Tier-0 file has {offered}"
                )
            report.recovered_lfns = [r.lfn for r in records if r.lfn in added]
            report.recovered = len(report.recovered_lfns)
            report.already_registered += len(records) - report.recovered - len(result.conflicts)
        for problem in rejections.values():
            report.rejected_by_reason[problem.reason.value] += 1
        report.rejected = len(rejections)
        self.quarantine.add(
            [
                QuarantineEntry(
                    topic=f"reconcile:{block}",
                    partition=-1,
                    offset=-1,
                    key=lfn.encode(),
                    payload=_reconcile_payload(lfn, facts.get(lfn)),
                    reason=problem.reason,
                    text=problem.text,
                    lfn=lfn,
                )
                for lfn, problem in rejections.items()
            ]
        )
        critical = [r for r in rejections.values() if r.reason.critical]
        if critical:
            try:
                self.notifier.notify(
                    f"Reconciliation of {block}: {len(critical)} critical problem(s)",
                    "\n".join(f"- {r.reason.value}: {r.text}" for r in critical[:200]),
                )
            except RawflowError as exc:
                log.error("could not notify: %s", exc)
        return report


def _reconcile_payload(lfn: str, facts: Tier0Facts | None) -> bytes:
    import json

    body: dict[str, Any] = {"lfn": lfn, "source": "reconcile"}
    if facts is not None:
        body.update({"url": facts.url, "size": facts.size, "adler32": facts.adler32})
    return json.dumps(body, sort_keys=True).encode()


class CatalogueCall:
    """Catalogue calls with database outages turned into TransientError."""

    def __init__(self, catalogue: CatalogueAPI) -> None:
        self.catalogue = catalogue

    def _guard(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except TransientError:
            raise
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise TransientError(f"catalogue unavailable: {exc.orig}") from exc
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise TransientError(f"catalogue connection lost: {exc.orig}") from exc
            raise

    def register(self, records: Sequence[FileRecord], *, site: str) -> RegisterResult:
        result: RegisterResult = self._guard(lambda: self.catalogue.register_files(records, site=site))
        return result

    def get_files(self, lfns: Sequence[str]) -> Mapping[str, FileRecord]:
        result: Mapping[str, FileRecord] = self._guard(lambda: self.catalogue.get_files(lfns))
        return result


# --- standalone daemon --------------------------------------------------------------------------------


class Assignment:
    """The partitions this consumer group member owns, kept from the group's rebalance callbacks.

    Several receivers (processes or hosts) in one consumer group drain an announcement topic's partitions in
    parallel: the group coordinator gives each member a share, and when a member dies (its session times out)
    or joins, the partitions are handed out again. Nothing else is needed for exactly-once registration: a
    member commits a partition's offset only after the catalogue commit of the batch that read it, so the new
    owner starts after the last registered batch and at worst re-reads one batch (registration is idempotent).
    Callbacks run inside ``consume()``, between batches, so a batch never straddles a rebalance on this side.
    """

    def __init__(self, member: str = "") -> None:
        self.member = member
        self.owned: set[tuple[str, int]] = set()
        self.rebalances = 0

    def on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        # Eager rebalancing revokes everything first; cooperative rebalancing hands out increments: add both ways.
        self.owned |= {(tp.topic, tp.partition) for tp in partitions}
        log.info("member %s assigned %s", self.member or "?", _partitions(self.owned))

    def on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.owned -= {(tp.topic, tp.partition) for tp in partitions}
        log.info(
            "member %s revoked %s", self.member or "?", _partitions({(tp.topic, tp.partition) for tp in partitions})
        )

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.on_revoke(consumer, partitions)

    def owns(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self.owned


def _partitions(owned: Iterable[tuple[str, int]]) -> str:
    return " ".join(f"{topic}[{partition}]" for topic, partition in sorted(owned)) or "(none)"


def make_consumer(settings: KafkaSettings, topics: Sequence[str], assignment: Assignment | None = None) -> Consumer:
    """A subscribed consumer whose broker errors are logged (librdkafka keeps reconnecting by itself). With
    ``assignment``, the partitions it owns are tracked (and logged) through the group's rebalances."""

    def on_error(error: KafkaError) -> None:
        level = logging.ERROR if error.code() == KafkaError._ALL_BROKERS_DOWN else logging.WARNING
        log.log(level, "Kafka: %s", error)

    config = consumer_config(settings)
    config["error_cb"] = on_error
    consumer = Consumer(config)
    if assignment is None:
        consumer.subscribe(list(topics))
    else:
        consumer.subscribe(
            list(topics), on_assign=assignment.on_assign, on_revoke=assignment.on_revoke, on_lost=assignment.on_lost
        )
    return consumer


def make_producer(settings: KafkaSettings) -> Producer:
    def on_error(error: KafkaError) -> None:
        log.warning("Kafka producer: %s", error)

    config = producer_config(settings)
    config["error_cb"] = on_error
    return Producer(config)


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m rawflow.receiver", description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap", default=env("RAWFLOW_KAFKA_BOOTSTRAP"), help="Kafka bootstrap host:port")
    p.add_argument("--group", default=env("RAWFLOW_RECEIVER_GROUP", "rawflow-datareceiver"))
    p.add_argument("--catalogue-url", default=env("RAWFLOW_CATALOGUE_URL"), help="SQLAlchemy URL of the catalogue")
    p.add_argument("--quarantine-url", default=env("RAWFLOW_QUARANTINE_URL"), help="default: the catalogue URL")
    p.add_argument("--sites", default=env("RAWFLOW_SITES"), help="site policy YAML (default: config/sites.yaml)")
    p.add_argument("--storage", default="gfal2", help="storage backend name")
    p.add_argument("--types", default="RAW,RTRAW", help="data types to receive (one daemon per type is fine)")
    p.add_argument("--topic-prefix", default=env("RAWFLOW_TOPIC_PREFIX", ""))
    p.add_argument("--storage-check", choices=[m.value for m in StorageCheck], default=StorageCheck.FULL.value)
    p.add_argument("--storage-parallel", type=int, default=Limits().storage_parallel)
    p.add_argument("--max-file-size", type=int, default=Limits().max_file_size)
    p.add_argument("--max-message-bytes", type=int, default=Limits().max_message_bytes)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--poll-timeout", type=float, default=1.0)
    p.add_argument("--session-timeout-ms", type=int, default=45000)
    p.add_argument(
        "--partitions",
        type=int,
        default=0,
        help="create missing topics with this many partitions (0: expect them to exist); run several receivers "
        "with the same --group to drain them in parallel",
    )
    p.add_argument("--member", default=env("RAWFLOW_RECEIVER_MEMBER", ""), help="this member's name in logs")
    p.add_argument("--smtp-host", default=env("RAWFLOW_SMTP_HOST"))
    p.add_argument("--smtp-port", type=int, default=int(env("RAWFLOW_SMTP_PORT", "25")))
    p.add_argument("--smtp-user", default=env("RAWFLOW_SMTP_USER"))
    p.add_argument("--smtp-from", default=env("RAWFLOW_SMTP_FROM", "rawflow@localhost"))
    p.add_argument("--smtp-to", default=env("RAWFLOW_SMTP_TO", ""), help="comma-separated recipients")
    p.add_argument("--log-level", default=env("RAWFLOW_LOG_LEVEL", "INFO"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # gfal2 logs every plugin it loads, per context, at INFO: noise in a daemon's log.
    logging.getLogger("gfal2").setLevel(max(logging.WARNING, logging.getLogger().level))
    if not args.bootstrap or not args.catalogue_url:
        log.error("--bootstrap and --catalogue-url (or RAWFLOW_KAFKA_BOOTSTRAP / RAWFLOW_CATALOGUE_URL) are required")
        return 2
    from rawflow.catalogue import get_catalogue
    from rawflow.sites import default_sites_path
    from rawflow.storage import get_storage

    sites = load_sites(args.sites or default_sites_path())
    topics = Topics().with_prefix(args.topic_prefix)
    types = [DataType.parse(t.strip()) for t in args.types.split(",") if t.strip()]
    settings = KafkaSettings(
        bootstrap=args.bootstrap,
        group_id=args.group,
        session_timeout_ms=args.session_timeout_ms,
        client_id=f"rawflow-{args.member}" if args.member else "rawflow",
    )
    if args.partitions:
        settings = replace(settings, partitions=args.partitions)
        ensure_topics(settings, topics)
    notifier: Notifier
    if args.smtp_host and args.smtp_to:
        notifier = SmtpNotifier(
            host=args.smtp_host,
            port=args.smtp_port,
            from_addr=args.smtp_from,
            to_addrs=[a.strip() for a in args.smtp_to.split(",") if a.strip()],
            user=args.smtp_user,
            password=os.environ.get("RAWFLOW_SMTP_PASSWORD"),
        )
    else:
        notifier = LogNotifier(log)
    quarantine = Quarantine(args.quarantine_url or args.catalogue_url)
    quarantine.create_schema()
    limits = Limits(
        max_file_size=args.max_file_size,
        max_message_bytes=args.max_message_bytes,
        storage_check=StorageCheck(args.storage_check),
        storage_parallel=args.storage_parallel,
    )
    member = args.member or f"{os.uname().nodename}:{os.getpid()}"
    consumer = make_consumer(settings, [topics.announce_for(t) for t in types], Assignment(member))
    producer = make_producer(settings)
    receiver = Receiver(
        consumer,
        get_catalogue(args.catalogue_url),
        get_storage(args.storage),
        sites,
        quarantine,
        producer,
        notifier,
        limits,
        topics=topics,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "DataReceiver %s up: %s → %s, group %s, storage check %s",
        member,
        ",".join(t.value for t in types),
        settings.bootstrap,
        settings.group_id,
        limits.storage_check.value,
    )
    try:
        receiver.run_forever(stop, batch_size=args.batch_size, timeout=args.poll_timeout)
    finally:
        receiver.close()
        producer.flush(10)
        consumer.close()
    log.info("DataReceiver stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
