"""The announcer: plays the online side. Writes synthetic raw files into the Tier-0 storage element and
publishes their announcements; can also publish hostile messages (for tests and drills).

The files are real RAW files (``docs/raw-format.md``): events generated deterministically from the run,
stream, sequence, file time and size, filling the asked size exactly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from confluent_kafka import Producer

from rawflow.checks import tier0_root
from rawflow.checksum import adler32_bytes
from rawflow.kafka import DeliveryTracker, Topics
from rawflow.messages import Reason, announcement_payload
from rawflow.naming import (
    DataType,
    RawFileName,
    block_id_for,
    day_zone,
    lfn_for,
    parse_lfn,
    receiving_day,
    receiving_day_bounds,
)
from rawflow.payloads.rawformat import MIN_FILE_SIZE, synthesize
from rawflow.sites import Site
from rawflow.storage.base import Storage


@dataclass(frozen=True, slots=True)
class SyntheticFile:
    lfn: str
    file_name: str
    file_path: str
    size: int
    adler32: str
    data_type: DataType
    run: int
    stream: str
    content: bytes

    def payload(self, **overrides: object) -> bytes:
        """The announcement; ``overrides`` replace fields (e.g. ``Checksum="00000001"``) for hostile variants."""
        body = json.loads(
            announcement_payload(
                file_name=self.file_name,
                file_path=self.file_path,
                checksum=self.adler32,
                size=self.size,
                data_type=self.data_type,
                run=self.run,
                stream=self.stream,
            )
        )
        for key, value in overrides.items():
            if value is _DROP:
                body.pop(key, None)
            else:
                body[key] = value
        return json.dumps(body).encode()


_DROP = object()
DROP: object = _DROP
"""Pass as an override value to remove the field from the payload."""


@dataclass(frozen=True, slots=True)
class HostileMessage:
    topic: str
    value: bytes
    key: bytes | None
    expected: Reason
    lfn: str | None = None


class Announcer:
    """Files named and filed as the DAQ does: ``FileTime`` is the file's start time (UTC), its directory the
    receiving day of that instant in ``timezone`` (the site policy's; see :mod:`rawflow.naming`)."""

    def __init__(
        self,
        storage: Storage,
        tier0: Site,
        producer: Producer,
        topics: Topics | None = None,
        *,
        timezone: str = "UTC",
    ) -> None:
        self.storage = storage
        self.tier0 = tier0
        self.producer = producer
        self.topics = topics or Topics()
        self.root = tier0_root(tier0)
        day_zone(timezone)  # an unknown zone is a one-line error here, not at the first file
        self.timezone = timezone

    def make_files(
        self,
        count: int,
        *,
        data_type: DataType = DataType.RAW,
        day: date | None = None,
        run: int = 1,
        stream: str = "Physics",
        sizes: tuple[int, int] = (256, 4096),
        first_sequence: int = 1,
        rng: random.Random | None = None,
        start: datetime | None = None,
        reuse_pool: bool = False,
    ) -> list[SyntheticFile]:
        """``count`` files of one run, received on ``day``, of a random size in ``sizes`` (at least
        MIN_FILE_SIZE = 64 bytes), holding RAW events (the same for the same run, stream, sequence, day, size).

        A file's start time is ``sequence`` seconds after the start of ``day`` (its local midnight in the
        announcer's zone, modulo the day's length), so every file is filed under ``day``. With ``start`` (an
        instant; naive is UTC) instead of ``day``, the files start at ``start`` and one second apart, each filed
        under the receiving day of its own start time: a series can straddle midnight as a DAQ run does.
        ``reuse_pool``: large files repeat pooled events instead of simulating their own (see ``synthesize``)."""
        if sizes[0] < MIN_FILE_SIZE or sizes[1] < sizes[0]:
            raise ValueError(f"sizes must be an interval of at least {MIN_FILE_SIZE} bytes, got {sizes}")
        if start is not None and day is not None:
            raise ValueError("give the day the files are received on or the start time of the first, not both")
        rng = rng or random.Random()
        if start is not None:
            first = (start if start.tzinfo is not None else start.replace(tzinfo=UTC)).astimezone(UTC)
            times = [first + timedelta(seconds=i) for i in range(count)]
        else:
            day = day or receiving_day(datetime.now(UTC), self.timezone)
            day_start, day_end = receiving_day_bounds(block_id_for(day), self.timezone)
            length = int((day_end - day_start).total_seconds())  # 86400, or 82800/90000 on a DST change
            times = [day_start + timedelta(seconds=(first_sequence + i) % length) for i in range(count)]
        files = []
        for i, instant in enumerate(times):
            sequence = first_sequence + i
            file_time = instant.replace(tzinfo=None)  # FileTime: UTC, as the DAQ writes it
            received = receiving_day(instant, self.timezone)
            name = RawFileName.build(
                daq="Daq",
                run_number=run,
                stream_type="Det",
                stream_name=stream,
                file_tag="Raw" if data_type is DataType.RAW else "RtRaw",
                file_time=file_time,
                file_sequence=sequence,
                data_type=data_type,
            ).name
            lfn = lfn_for(data_type, received, name)
            content, _truth = synthesize(
                run=run,
                stream=stream,
                sequence=sequence,
                start_time_ns=int(file_time.replace(tzinfo=UTC).timestamp()) * 1_000_000_000,
                size=rng.randint(*sizes),
                reuse_pool=reuse_pool,
            )
            files.append(
                SyntheticFile(
                    lfn=lfn,
                    file_name=name,
                    file_path=f"{self.root}{lfn}",
                    size=len(content),
                    adler32=adler32_bytes(content),
                    data_type=data_type,
                    run=run,
                    stream=stream,
                    content=content,
                )
            )
        return files

    @staticmethod
    def damaged(good: SyntheticFile) -> SyntheticFile:
        """``good`` cut in half, as a DAQ crash mid-write leaves a file: announced consistently (its own size
        and checksum, so the receiver registers it) but malformed, so ``raw2rtraw`` refuses it (exit 3,
        ``truncated …``). For the keep-up's failure drills."""
        content = good.content[: max(len(good.content) // 2, 1)]
        return replace(good, content=content, size=len(content), adler32=adler32_bytes(content))

    def write(self, files: Sequence[SyntheticFile], *, parallel: int = 8) -> None:
        """Put the files into the Tier-0 through the storage interface."""

        def put(f: SyntheticFile) -> None:
            self.storage.put_bytes(self.tier0.pfn(f.lfn), f.content)

        if parallel <= 1:
            for f in files:
                put(f)
            return
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="announcer") as pool:
            list(pool.map(put, files))

    def announce(self, files: Iterable[SyntheticFile], *, flush_timeout: float = 60.0) -> int:
        tracker = DeliveryTracker()
        count = 0
        for f in files:
            self._produce(self.topics.announce_for(f.data_type), f.payload(), f.file_name.encode(), tracker)
            count += 1
        tracker.flush(self.producer, flush_timeout)
        return count

    def publish(self, messages: Iterable[HostileMessage], *, flush_timeout: float = 60.0) -> int:
        tracker = DeliveryTracker()
        count = 0
        for m in messages:
            self._produce(m.topic, m.value, m.key, tracker)
            count += 1
        tracker.flush(self.producer, flush_timeout)
        return count

    def _produce(self, topic: str, value: bytes, key: bytes | None, tracker: DeliveryTracker) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, on_delivery=tracker)
                return
            except BufferError:
                self.producer.poll(0.1)

    def hostile(self, good: SyntheticFile, *, other: SyntheticFile | None = None) -> list[HostileMessage]:
        """One message per kind of bad announcement, built around a good file (which itself is untouched).

        ``other`` is a second good file, already written, used for the wrong-checksum and wrong-size cases.
        """
        raw = self.topics.announce_for(good.data_type)
        wrong_topic = self.topics.announce_for(DataType.RTRAW if good.data_type is DataType.RAW else DataType.RAW)
        key = good.file_name.encode()
        traversal = good.file_path.replace(f"/{good.data_type.directory}/", f"/{good.data_type.directory}/../", 1)
        cases: list[tuple[bytes, Reason, str, str | None]] = [
            (b"{not json", Reason.BAD_JSON, raw, None),
            (b"\xff\xfe\x00garbage", Reason.BAD_JSON, raw, None),
            (b'["a", "list"]', Reason.NOT_OBJECT, raw, None),
            (good.payload(Checksum=DROP), Reason.MISSING_FIELD, raw, None),
            (good.payload(Size="123"), Reason.WRONG_FIELD_TYPE, raw, None),
            (good.payload(Size=0), Reason.ZERO_SIZE, raw, None),
            (good.payload(Size=11 * 10**9), Reason.TOO_LARGE, raw, None),
            (good.payload(FilePath=traversal), Reason.BAD_PATH, raw, None),
            (good.payload(Type="ESD"), Reason.UNKNOWN_TYPE, raw, None),
            (good.payload(), Reason.TYPE_TOPIC_MISMATCH, wrong_topic, None),
            (good.payload(Checksum="zz12"), Reason.BAD_CHECKSUM, raw, None),
            (good.payload(FileName="Other." + good.file_name.split(".", 1)[1]), Reason.NAME_PATH_MISMATCH, raw, None),
            (json.dumps({"FileName": "x" * 5_000_000}).encode(), Reason.MESSAGE_TOO_LARGE, raw, None),
        ]
        # The good file's name filed under the next day: its FileTime is not in that directory's day.
        received = parse_lfn(good.lfn).received
        following = received + timedelta(days=1)
        misfiled = good.file_path.replace(f"/{received:%Y/%m%d}/", f"/{following:%Y/%m%d}/", 1)
        cases.append((good.payload(FilePath=misfiled), Reason.DAY_MISMATCH, raw, None))
        absent_name = "Gone." + good.file_name.split(".", 1)[1]  # a valid name no file was written under
        absent = good.file_path.rsplit("/", 1)[0] + "/" + absent_name
        cases.append((good.payload(FilePath=absent, FileName=absent_name), Reason.ABSENT_AT_TIER0, raw, None))
        if other is not None:
            bad_sum = format(int(other.adler32, 16) ^ 0x1, "08x")
            cases.append((other.payload(Checksum=bad_sum), Reason.CHECKSUM_MISMATCH, raw, other.lfn))
            cases.append((other.payload(Size=other.size + 1), Reason.SIZE_MISMATCH, raw, other.lfn))
        return [HostileMessage(topic, value, key, reason, lfn) for value, reason, topic, lfn in cases]
