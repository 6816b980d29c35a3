"""Tape archive: what is safely on tape, as the tape endpoint reports it (gfal2 ``archive_poll``).

A file copied to the archive site first lands in its disk buffer; the tape system migrates it later. Only when
``archive_poll`` reports it on tape does the catalogue call the tape replica ARCHIVED. The poll runs in a worker
(it calls gfal2, which must stay out of Airflow's triggerer); the trigger side only sleeps and reschedules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rawflow.errors import StorageError
from rawflow.sites import Site
from rawflow.storage.base import Storage

POLL_BATCH = 500


@dataclass(frozen=True, slots=True)
class ArchivePoll:
    """One poll of a block's files on tape: archived, still pending, failed (LFN → the endpoint's error)."""

    archived: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """Nothing left to wait for (failures are retried by archiving again, not by waiting)."""
        return not self.pending

    def to_dict(self) -> dict[str, object]:
        return {
            "archived": len(self.archived),
            "pending": len(self.pending),
            "failed": dict(self.failed),
            "done": self.done,
        }


def poll_tape(storage: Storage, tape: Site, lfns: Sequence[str]) -> ArchivePoll:
    """Ask the tape endpoint about each file (in batches); an unreachable endpoint leaves files pending."""
    archived: list[str] = []
    pending: list[str] = []
    failed: dict[str, str] = {}
    for start in range(0, len(lfns), POLL_BATCH):
        batch = list(lfns[start : start + POLL_BATCH])
        urls = {tape.pfn(lfn): lfn for lfn in batch}
        try:
            answers: Mapping[str, bool | str] = storage.archive_poll(urls)
        except StorageError:
            pending.extend(batch)  # the site is down: ask again next time
            continue
        for url, lfn in urls.items():
            answer = answers.get(url, False)
            if answer is True:
                archived.append(lfn)
            elif answer is False:
                pending.append(lfn)
            else:
                failed[lfn] = str(answer)
    return ArchivePoll(tuple(archived), tuple(pending), failed)
