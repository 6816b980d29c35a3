"""The gfal2 copy engine both the gfal2 backend and the FTS3 test double use.

It copies many files in bulk, one stage per hop, one round per alternative source: every file first tries
its preferred source; files whose copy failed try their next source in the next round. Bulk copies never ask
gfal2 to verify checksums (that segfaults); the engine compares adler32 itself after the copy, and removes a
destination whose checksum is wrong.

python3-gfal2 1.12 also segfaults when two or more files of one bulk copy fail, which a site going down
mid-copy causes. Bulk copies therefore run in a child process (``python -m rawflow.transfer.copy_worker``),
the one crash boundary (the storage in it copies in-process); when it crashes the batch is split in halves
and retried, down to single files, which fail cleanly. Each replica's destination adler32 is asked for once:
here, after the copy (the storage's own post-copy comparison is off), and the result is what validation
records.
"""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from rawflow.errors import StorageError, StorageNotFoundError, TransientError
from rawflow.storage.base import CopyRequest, CopyResult, Storage

log = logging.getLogger(__name__)

DEFAULT_STORAGE_FACTORY = "rawflow.storage.gfal2_storage:Gfal2Storage"
VERIFY_MODES = ("both", "target", "source", "none")
# Below this size a root-to-root copy is streamed through the worker: an xrootd TPC costs ~2.5 s of client
# polling per file (~130 ms/file at 20 in parallel), a streamed 4 KiB file ~15 ms.
DEFAULT_STREAM_BELOW = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StorageSpec:
    """How to build a Storage in this or a child process: ``module:callable`` and JSON-able keyword options.

    Options may hold credentials: they travel to the child over a pipe, never on its command line, never logged.
    """

    factory: str = DEFAULT_STORAGE_FACTORY
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Storage:
        module_name, _, attr = self.factory.partition(":")
        make: Callable[..., Storage] = getattr(importlib.import_module(module_name), attr)
        return make(**dict(self.options))

    def __repr__(self) -> str:  # options may carry tokens
        return f"StorageSpec({self.factory!r}, options={sorted(self.options)})"


@dataclass(frozen=True, slots=True)
class CopyTask:
    """Copy to ``destination`` from the first of ``sources`` that works, through ``hops`` in order."""

    sources: tuple[str, ...]
    destination: str
    adler32: str | None = None
    size: int | None = None
    hops: tuple[str, ...] = ()

    @property
    def legs(self) -> tuple[str, ...]:
        """Every target in order: the hops, then the destination."""
        return (*self.hops, self.destination)


@dataclass(frozen=True, slots=True)
class CopyOutcome:
    ok: bool
    source: str | None = None
    reason: str | None = None
    bytes: int = 0
    tried: tuple[str, ...] = ()
    transient: bool = False
    skipped: bool = False
    failed_leg: int | None = None  # which leg failed: 0 = into the first hop (or the destination)


EXISTING_POLICIES = ("fail", "overwrite", "keep_good")


def tpc_mode(source: str, destination: str, size: int | None = None, stream_below: int = 0) -> str:
    """Third-party copy only between two xrootd servers; streamed through us when the protocols differ.

    Files smaller than ``stream_below`` bytes are streamed even between xrootd servers: an xrootd TPC costs
    a fixed ~2.5 s of client polling per file, far more than moving a small file through the worker.
    """
    src, dst = urlsplit(source).scheme, urlsplit(destination).scheme
    if src == dst == "root":
        return "never" if size is not None and size < stream_below else "only"
    if src in ("davs", "https") and dst in ("davs", "https"):
        return "auto"
    return "never"


@dataclass
class _Attempt:
    task_index: int
    source: str
    target: str


class CopyEngine:
    """Bulk copies with alternative sources, multihop and post-copy adler32 comparison."""

    def __init__(
        self,
        storage: StorageSpec | None = None,
        *,
        parallel: int = 10,
        isolate: bool = True,
        python: str = sys.executable,
        timeout: float = 3600.0,
        stream_below: int = DEFAULT_STREAM_BELOW,
        retries: int = 1,
    ) -> None:
        self.spec = storage or StorageSpec()
        self.parallel = parallel
        self.stream_below = stream_below
        self.retries = max(0, retries)
        self.isolate = isolate
        self.python = python
        self.timeout = timeout
        self._storage: Storage | None = None

    @property
    def storage(self) -> Storage:
        """The in-process storage used for stat, checksum and unlink (never for bulk copies when isolated)."""
        if self._storage is None:
            self._storage = self.spec.build()
        return self._storage

    def run(self, tasks: Sequence[CopyTask], *, verify: str = "both", existing: str = "fail") -> list[CopyOutcome]:
        """Copy every task; never raises for one file's failure.

        ``existing`` says what to do with a destination that already exists: ``fail`` (FTS without overwrite),
        ``overwrite``, or ``keep_good``: keep it when size and adler32 match (a skipped copy), else replace it.
        """
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, not {verify!r}")
        if existing not in EXISTING_POLICIES:
            raise ValueError(f"existing must be one of {EXISTING_POLICIES}, not {existing!r}")
        outcomes: list[CopyOutcome | None] = [None] * len(tasks)
        sources_now: list[tuple[str, ...]] = [t.sources for t in tasks]
        tried: list[list[str]] = [[] for _ in tasks]
        moved = [0] * len(tasks)
        used: list[str | None] = [None] * len(tasks)
        stages = max((len(t.legs) for t in tasks), default=0)
        for stage in range(stages):
            live = [i for i, t in enumerate(tasks) if outcomes[i] is None and stage < len(t.legs)]
            final = {i: stage == len(tasks[i].legs) - 1 for i in live}
            results = self._stage(
                [tasks[i] for i in live],
                [sources_now[i] for i in live],
                [tasks[i].legs[stage] for i in live],
                final=[final[i] for i in live],
                verify=verify,
                existing=existing,
            )
            for i, result in zip(live, results, strict=True):
                tried[i].extend(result.tried)
                moved[i] += result.bytes
                if stage == 0:
                    used[i] = result.source
                if not result.ok:
                    outcomes[i] = CopyOutcome(
                        False,
                        used[i],
                        result.reason,
                        moved[i],
                        tuple(tried[i]),
                        transient=result.transient,
                        failed_leg=stage,
                    )
                elif final[i]:
                    outcomes[i] = CopyOutcome(True, used[i], None, moved[i], tuple(tried[i]), skipped=result.skipped)
                else:
                    sources_now[i] = (tasks[i].legs[stage],)
        return [o if o is not None else CopyOutcome(False, reason="not attempted") for o in outcomes]

    def _stage(
        self,
        tasks: Sequence[CopyTask],
        sources: Sequence[tuple[str, ...]],
        targets: Sequence[str],
        *,
        final: Sequence[bool],
        verify: str,
        existing: str,
    ) -> list[CopyOutcome]:
        """One leg for every task: try each task's sources in turn, in bulk rounds."""
        results: list[CopyOutcome | None] = [None] * len(tasks)
        tried: list[list[str]] = [[] for _ in tasks]
        last_error: list[tuple[str, bool]] = [("no source", False)] * len(tasks)
        pending: list[int] = []
        # Destination checks and post-copy checksums are round trips to the sites: ask them in parallel.
        directories = sorted({t.rstrip("/").rpartition("/")[0] for t in targets})
        with ThreadPoolExecutor(max_workers=max(1, self.parallel), thread_name_prefix="engine") as pool:
            listed = dict(zip(directories, pool.map(self._listing, directories), strict=True))
            existing_now = list(pool.map(lambda i: self._existing(targets[i], tasks[i], listed), range(len(tasks))))
        for i, target in enumerate(targets):
            good = existing_now[i]
            policy = existing if final[i] else "keep_good"  # an intermediate hop holding the file is reused
            if good is None:
                pending.append(i)
            elif policy == "keep_good" and good:
                results[i] = CopyOutcome(True, source=None, skipped=True)
            elif policy == "fail":
                results[i] = CopyOutcome(False, reason=f"{target} exists and overwrite is not enabled")
            else:
                self._remove(target)
                pending.append(i)
        # Every source in turn, then all of them once more per retry: a copy that failed for a passing reason
        # (a checksum query racing the end of a third-party copy, a busy server) usually succeeds the next time.
        order = [tuple(s) * (1 + self.retries) for s in sources]
        round_no = 0
        while pending:
            attempts = [_Attempt(i, order[i][round_no], targets[i]) for i in pending if round_no < len(order[i])]
            for i in pending:
                if round_no >= len(order[i]):
                    reason, transient = last_error[i]
                    results[i] = CopyOutcome(False, reason=reason, tried=tuple(tried[i]), transient=transient)
            if not attempts:
                break
            failed: list[int] = []
            copies = self._copy_all(attempts, tasks, verify)
            with ThreadPoolExecutor(max_workers=max(1, self.parallel), thread_name_prefix="engine") as pool:
                problems = list(
                    pool.map(
                        lambda ac: (
                            self._verify(ac[0].source, ac[0].target, tasks[ac[0].task_index], verify, ac[1])
                            if ac[1].ok
                            else None
                        ),
                        list(zip(attempts, copies, strict=True)),
                    )
                )
            for attempt, copy, problem in zip(attempts, copies, problems, strict=True):
                i = attempt.task_index
                tried[i].append(attempt.source)
                if copy.ok:
                    if problem is None:
                        moved = copy.bytes or tasks[i].size or 0
                        results[i] = CopyOutcome(True, attempt.source, None, moved, tuple(tried[i]))
                        continue
                    self._remove(attempt.target)
                    last_error[i] = problem
                else:
                    last_error[i] = (f"{attempt.source}: {copy.error or 'copy failed'}", copy.transient)
                failed.append(i)
            pending = failed
            round_no += 1
        return [r if r is not None else CopyOutcome(False, reason="not attempted") for r in results]

    def _copy_all(self, attempts: Sequence[_Attempt], tasks: Sequence[CopyTask], verify: str) -> list[CopyResult]:
        """Bulk copy grouped by third-party-copy mode; results in the order of ``attempts``."""
        by_mode: dict[str, list[int]] = {}
        for n, a in enumerate(attempts):
            mode = tpc_mode(a.source, a.target, tasks[a.task_index].size, self.stream_below)
            by_mode.setdefault(mode, []).append(n)
        results: list[CopyResult | None] = [None] * len(attempts)
        for mode, indices in by_mode.items():
            requests = [
                CopyRequest(attempts[n].source, attempts[n].target, None, tasks[attempts[n].task_index].size)
                for n in indices
            ]
            for n, result in zip(indices, self._bulk(requests, mode, verify), strict=True):
                results[n] = result
        return [r for r in results if r is not None]

    def _bulk(self, requests: Sequence[CopyRequest], mode: str, verify: str) -> list[CopyResult]:
        if not requests:
            return []
        # The engine compares the destination's checksum after the copy (_verify): the storage does not, so a
        # replica is checksummed at its destination once. Only when the engine skips that does the storage.
        storage_verifies = verify not in ("both", "target")
        if not self.isolate:
            return self.storage.copy(
                requests, tpc=mode, parallel=self.parallel, overwrite=False, verify=storage_verifies, preflight=False
            )
        return self._bulk_isolated(list(requests), mode, storage_verifies)

    def _bulk_isolated(self, requests: list[CopyRequest], mode: str, storage_verifies: bool) -> list[CopyResult]:
        payload = {
            "storage": {"factory": self.spec.factory, "options": dict(self.spec.options)},
            "requests": [{"source": r.source, "destination": r.destination, "size": r.size} for r in requests],
            "tpc": mode,
            "parallel": self.parallel,
            "verify": storage_verifies,
            # The engine compares the destination itself: the child reads it right after the copy (cheaper there).
            "measure": not storage_verifies,
        }
        try:
            done = subprocess.run(
                [self.python, "-m", "rawflow.transfer.copy_worker"],
                input=json.dumps(payload),
                capture_output=True,
                text=True,
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired:
            return [
                CopyResult(r, ok=False, error=f"copy timed out after {self.timeout:.0f} s", transient=True)
                for r in requests
            ]
        if done.returncode == 0:
            return [_result_from_json(r, raw) for r, raw in zip(requests, json.loads(done.stdout), strict=True)]
        # The child died, usually after copying: keep what arrived whole, retry the rest in halves.
        salvaged = self._salvage(requests)
        remaining = [r for r in requests if r.destination not in salvaged]
        log.warning(
            "bulk copy of %d files crashed (status %d): %d arrived, retrying %d",
            len(requests),
            done.returncode,
            len(salvaged),
            len(remaining),
        )
        if len(remaining) == 1 and len(requests) == 1:
            detail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            retried = [CopyResult(remaining[0], ok=False, error=f"copy process died: {detail[0]}", transient=True)]
        elif len(remaining) <= 1:
            retried = self._bulk_isolated(remaining, mode, storage_verifies) if remaining else []
        else:
            half = len(remaining) // 2
            retried = self._bulk_isolated(remaining[:half], mode, storage_verifies) + self._bulk_isolated(
                remaining[half:], mode, storage_verifies
            )
        by_destination = {r.request.destination: r for r in retried}
        return [salvaged.get(r.destination) or by_destination[r.destination] for r in requests]

    def _salvage(self, requests: Sequence[CopyRequest]) -> dict[str, CopyResult]:
        """Destinations a crashed copy completed (same adler32 as the source); partial ones are removed."""
        complete: dict[str, CopyResult] = {}
        for request in requests:
            try:
                size = self.storage.stat(request.destination).size
            except StorageError:
                continue
            try:
                same = self.storage.checksum(request.destination) == self.storage.checksum(request.source)
            except StorageError:
                same = False
            if same:
                complete[request.destination] = CopyResult(request, ok=True, bytes=size)
            else:
                self._remove(request.destination)
        return complete

    def _existing(self, url: str, task: CopyTask, listed: Mapping[str, frozenset[str] | None]) -> bool | None:
        """None when ``url`` does not exist; else whether it holds the expected size and adler32.

        ``listed``: the names in each target directory, from one listing per directory (a stat per file
        costs a round trip, ~100 ms over WebDAV): a name not listed needs no stat at all."""
        parent, _, name = url.rstrip("/").rpartition("/")
        names = listed.get(parent)
        if names is not None and name not in names:
            return None
        try:
            size = self.storage.stat(url).size
        except StorageNotFoundError:
            return None
        except StorageError:
            return None  # cannot tell now: let the copy attempt report the real problem
        if task.adler32 is None or (task.size is not None and size != task.size):
            return False
        try:
            return self.storage.checksum(url, "adler32") == task.adler32
        except StorageError:
            return False

    def _listing(self, directory: str) -> frozenset[str] | None:
        """The names in a target directory; empty when it does not exist; None when it cannot be listed."""
        try:
            return frozenset(self.storage.listdir(directory))
        except StorageNotFoundError:
            return frozenset()
        except StorageError:
            return None

    def _verify(
        self, source: str, target: str, task: CopyTask, verify: str, copied: CopyResult | None = None
    ) -> tuple[str, bool] | None:
        """None if the copy is good, else (why not, whether that may pass); checksums compared as asked.

        With an expected adler32 the destination's is asked for once — or not at all when the copy child
        measured it (``copied``); the source's only when they differ (to tell a damaged source from a damaged
        copy)."""
        measured_size = copied.size_at_destination if copied is not None else None
        measured_adler32 = copied.adler32_at_destination if copied is not None else None
        try:
            if task.size is not None:
                size = measured_size if measured_size is not None else self.storage.stat(target).size
                if size != task.size:
                    return f"size mismatch at {target}: {size} bytes, expected {task.size}", False
            if verify == "none":
                return None
            expected = task.adler32
            if verify == "source" or expected is None:
                at_source = self.storage.checksum(source, "adler32")
                if expected is not None and at_source != expected:
                    return f"checksum mismatch at source {source}: {at_source}, expected {expected}", False
                expected = at_source
            if verify in ("both", "target"):
                at_target = measured_adler32 or self.storage.checksum(target, "adler32")
                if at_target != expected:
                    if verify == "both" and task.adler32 is not None:
                        at_source = self.storage.checksum(source, "adler32")
                        if at_source != task.adler32:
                            return f"checksum mismatch at source {source}: {at_source}, expected {expected}", False
                    return f"checksum mismatch at {target}: {at_target}, expected {expected}", False
        except StorageError as exc:
            return f"verification failed: {exc}", isinstance(exc, TransientError)
        return None

    def _remove(self, url: str) -> None:
        try:
            self.storage.unlink(url)
        except StorageNotFoundError:
            pass
        except StorageError as exc:
            log.warning("could not remove %s: %s", url, exc)


def _result_from_json(request: CopyRequest, raw: Mapping[str, Any]) -> CopyResult:
    size = raw.get("size_at_destination")
    return CopyResult(
        request,
        ok=bool(raw["ok"]),
        error=raw.get("error"),
        transient=bool(raw.get("transient", False)),
        bytes=int(raw.get("bytes", 0)),
        size_at_destination=None if size is None else int(size),
        adler32_at_destination=raw.get("adler32_at_destination"),
    )


def results_to_json(results: Iterable[CopyResult]) -> list[dict[str, Any]]:
    return [
        {
            "ok": r.ok,
            "error": r.error,
            "transient": r.transient,
            "bytes": r.bytes,
            "size_at_destination": r.size_at_destination,
            "adler32_at_destination": r.adler32_at_destination,
        }
        for r in results
    ]
