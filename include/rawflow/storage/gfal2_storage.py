"""The :class:`~rawflow.storage.base.Storage` protocol over gfal2 (root://, davs://, https://, file://).

Where gfal2 may run: gfal2 is native code and can crash the whole Python process (see the notes on bulk
copies below), so it belongs in task workers only — never in the Airflow scheduler, DAG processor or
triggerer. Nothing here touches gfal2 at import time: the module is imported lazily and each thread
gets its own gfal2 context on first use.

Copies are verified here, not by gfal2: gfal2's bulk ``filecopy`` with checksum verification segfaults, so
files are copied without it and the adler32 of both ends compared afterwards (the server-side checksum
costs about a millisecond). A destination that differs from its source is deleted.

Bulk xrootd copies also segfault when a file fails (missing source, unreachable end), so this module
(1) checks sources and destinations before copying and (2) runs every multi-file xrootd ``filecopy`` in
a child process (``python -m rawflow.storage.gfal2_storage``): a crash there costs one batch, which is
then settled file by file, never the caller's process. A storage that already runs inside a crash boundary
(the copy engine's worker process, ``isolate_bulk=False``) copies in-process: one boundary, not two.

Tokens: ``tokens`` maps URL prefixes to bearer tokens; ``bearer_token`` applies to every HTTP(S)/WebDAV
URL. They are handed to gfal2 as credentials and to the copy child over its stdin, and never logged.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import signal
import ssl
import stat as stat_module
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from rawflow.checksum import normalise_adler32
from rawflow.errors import (
    PermanentStorageError,
    StorageError,
    StorageNotFoundError,
    TransientStorageError,
)
from rawflow.storage.base import CopyRequest, CopyResult, StatResult
from rawflow.storage.xrdcl_copy import RootCopy, copy_root_to_root

log = logging.getLogger(__name__)

TPC_MODES = ("only", "never", "auto")
HTTP_SCHEMES = ("davs", "https", "dav", "http")
STREAM_CHUNK = 8 * 1024 * 1024
# xrootd 5.5 caps a prepare-query answer at ~2 kB: about a dozen files per archive_poll request.
ARCHIVE_POLL_BATCH = 8
# Root TPC: each copy is an xrdcp process on the destination server. On 2 cores 20 at a time is fastest
# (10: ~255 ms/file, 20: ~160-230, 40: slower and gfal2 crashed); a child copies at most a batch.
ROOT_TPC_MAX_PARALLEL = 20
ROOT_BULK_BATCH = 200

# Errors that may pass by themselves (a retry can help); everything else is permanent.
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.EAGAIN,
        errno.EBUSY,
        errno.ECANCELED,
        errno.ECOMM,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.EINTR,
        errno.EIO,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.ENOTCONN,
        errno.EPIPE,
        errno.EPROTO,
        errno.ETIMEDOUT,
        errno.ENOSPC,
        errno.EREMOTEIO,
        112,  # davix "could not connect" (EHOSTDOWN on Linux, listed for clarity)
    }
)
_NOT_FOUND_ERRNOS = frozenset({errno.ENOENT})

# XrdCl reads these once per process. Its defaults retry a refused connection for minutes (a "site down"
# would hang the task) and then remember the failure for 30 minutes (a restarted site would stay "down");
# these fail in seconds and forget in seconds. Callers may set their own values first.
XRDCL_DEFAULTS = {
    "XRD_CONNECTIONWINDOW": "5",
    "XRD_CONNECTIONRETRY": "2",
    "XRD_STREAMERRORWINDOW": "5",
    "XRD_REQUESTTIMEOUT": "300",
}


def storage_error(operation: str, url: str, exc: BaseException) -> StorageError:
    """Map a gfal2 error (its ``code`` is a POSIX errno) to a typed storage error."""
    code = getattr(exc, "code", None)
    message = str(getattr(exc, "message", None) or exc)
    if code in _NOT_FOUND_ERRNOS:
        return StorageNotFoundError(operation, url, message, code)
    if code in _TRANSIENT_ERRNOS or code is None or code == 0:
        return TransientStorageError(operation, url, message, code)
    return PermanentStorageError(operation, url, message, code)


def copy_kind(source: str, destination: str) -> str:
    """How a pair can be copied: "root-tpc", "http-tpc", "local" (a file:// end) or "mixed"."""
    src, dst = urlsplit(source).scheme, urlsplit(destination).scheme
    if "file" in (src, dst):
        return "local"
    if src == dst == "root":
        return "root-tpc"
    if src in HTTP_SCHEMES and dst in HTTP_SCHEMES:
        return "http-tpc"
    return "mixed"


def _endpoint(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _parent(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[0]


@dataclass(frozen=True, slots=True)
class _Options:
    timeout: int
    nbstreams: int
    tokens: tuple[tuple[str, str], ...]
    silence: int = 30


class Gfal2Storage:
    """Storage over gfal2. Thread-safe: one gfal2 context per thread, made on first use."""

    def __init__(
        self,
        *,
        tokens: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
        timeout: int = 300,
        silence_timeout: int = 30,
        nbstreams: int = 1,
        archive_poll_batch: int = ARCHIVE_POLL_BATCH,
        isolate_bulk: bool = True,
    ) -> None:
        self.isolate_bulk = isolate_bulk
        pairs = dict(tokens or {})
        if bearer_token:
            for scheme in HTTP_SCHEMES:
                pairs.setdefault(f"{scheme}://", bearer_token)
        self._options = _Options(
            timeout=int(timeout),
            nbstreams=int(nbstreams),
            tokens=tuple(sorted(pairs.items())),
            silence=max(1, int(silence_timeout)),
        )
        self._archive_poll_batch = max(1, int(archive_poll_batch))
        self._local = threading.local()
        self._checksum_guard = threading.Lock()
        self._checksum_locks: dict[str, tuple[threading.Lock, list[int]]] = {}

    def __repr__(self) -> str:
        # Never show the tokens themselves.
        prefixes = [prefix for prefix, _ in self._options.tokens]
        return f"Gfal2Storage(timeout={self._options.timeout}, token_prefixes={prefixes})"

    # -- context ---------------------------------------------------------------------------------

    def _ctx(self) -> Any:
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = new_context(self._options)
            self._local.ctx = ctx
        return ctx

    def _call(self, operation: str, url: str, fn: Any, *args: Any) -> Any:
        import gfal2

        try:
            return fn(*args)
        except gfal2.GError as exc:
            raise storage_error(operation, url, exc) from None

    # -- primitives --------------------------------------------------------------------------------

    def stat(self, url: str) -> StatResult:
        st = self._call("stat", url, self._ctx().stat, url)
        return StatResult(
            url=url, size=int(st.st_size), is_dir=stat_module.S_ISDIR(st.st_mode), mtime=float(st.st_mtime)
        )

    def checksum(self, url: str, algorithm: str = "adler32") -> str:
        if algorithm.lower() != "adler32":
            raise PermanentStorageError("checksum", url, f"unsupported algorithm {algorithm!r}; only adler32")
        with self._one_checksum_at_a_time(url):
            value = self._call("checksum", url, self._ctx().checksum, url, "ADLER32")
        try:
            return normalise_adler32(str(value))
        except ValueError:
            raise PermanentStorageError("checksum", url, f"server answered {value!r}, not adler32 hex") from None

    @contextlib.contextmanager
    def _one_checksum_at_a_time(self, url: str) -> Iterator[None]:
        """xrootd answers two simultaneous first checksums of one file with a 5-minute stall and ESTALE:
        ask for each file's checksum one request at a time (the second then hits the server's cache)."""
        with self._checksum_guard:
            lock, users = self._checksum_locks.setdefault(url, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._checksum_guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._checksum_locks[url]

    def exists(self, url: str) -> bool:
        try:
            self.stat(url)
        except StorageNotFoundError:
            return False
        return True

    def mkdir_p(self, url: str) -> None:
        ctx = self._ctx()
        self._call("mkdir", url, ctx.mkdir_rec, url, 0o755)

    def listdir(self, url: str) -> list[str]:
        names = self._call("listdir", url, self._ctx().listdir, url)
        return sorted(str(n).rstrip("/") for n in names if str(n).rstrip("/") not in ("", ".", ".."))

    def list_sizes(self, url: str) -> dict[str, int]:
        # One request per directory (a WebDAV PROPFIND, an xrootd dirlist with stat info): the destination audit
        # of a 14,400-file block stat'ed every replica instead, 6 min for 4 sites (2 cores, 4 KiB files).
        def read() -> dict[str, int]:
            directory = self._ctx().opendir(url)
            sizes: dict[str, int] = {}
            while True:
                entry, info = directory.readpp()
                if entry is None:
                    return sizes
                name = str(entry.d_name).rstrip("/")
                if name not in ("", ".", "..") and not stat_module.S_ISDIR(info.st_mode):
                    sizes[name] = int(info.st_size)

        found: dict[str, int] = self._call("listdir", url, read)
        return found

    def unlink(self, url: str) -> None:
        self._call("unlink", url, self._ctx().unlink, url)

    def put_bytes(self, url: str, data: bytes) -> None:
        self.mkdir_p(_parent(url))
        handle = self._call("open", url, self._ctx().open, url, "w")
        view = memoryview(data)
        offset = 0
        while offset < len(view):
            chunk = bytes(view[offset : offset + STREAM_CHUNK])
            written = self._call("write", url, handle.write, chunk)
            if written <= 0:
                raise TransientStorageError("write", url, "server accepted no bytes")
            offset += int(written)
        del handle  # gfal2 closes (and the server commits) the file when the handle goes

    def read_bytes(self, url: str) -> bytes:
        handle = self._call("open", url, self._ctx().open, url, "r")
        parts = []
        while chunk := self._call("read", url, handle.read_bytes, STREAM_CHUNK):
            parts.append(bytes(chunk))
        return b"".join(parts)

    # -- tape --------------------------------------------------------------------------------------

    def archive_poll(self, urls: Iterable[str]) -> dict[str, bool | str]:
        """True when a file is on tape, False while pending, an error text else (never raises per file)."""
        import gfal2

        wanted = list(dict.fromkeys(urls))
        answers: dict[str, bool | str] = {}
        for start in range(0, len(wanted), self._archive_poll_batch):
            batch = wanted[start : start + self._archive_poll_batch]
            try:
                errors = self._ctx().archive_poll(batch)
            except gfal2.GError as exc:
                # The whole query failed (site down, no tape interface): an error for each file.
                text = str(storage_error("archive_poll", batch[0], exc))
                answers.update(dict.fromkeys(batch, text))
                continue
            for url, error in zip(batch, errors, strict=True):
                if error is None:
                    answers[url] = True
                elif getattr(error, "code", None) == errno.EAGAIN:
                    answers[url] = False
                else:
                    answers[url] = str(storage_error("archive_poll", url, error))
        return answers

    # -- copy --------------------------------------------------------------------------------------

    def copy(
        self,
        requests: Sequence[CopyRequest],
        *,
        tpc: str = "auto",
        parallel: int = 10,
        overwrite: bool = False,
        verify: bool = True,
        preflight: bool = True,
    ) -> list[CopyResult]:
        """Copy many files and (``verify``) compare each by adler32 on both ends; one result per request, in
        order. With ``verify=False`` the caller compares checksums itself; with ``preflight=False`` it has
        already checked sources and destinations (each check is a round trip per file)."""
        if tpc not in TPC_MODES:
            raise ValueError(f"tpc must be one of {', '.join(TPC_MODES)}, got {tpc!r}")
        parallel = max(1, int(parallel))
        results: dict[int, CopyResult] = {}
        pending: dict[int, CopyRequest] = {}
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            checked = pool.map(lambda r: self._preflight(r, overwrite) if preflight else None, requests)
            for index, (request, verdict) in enumerate(zip(requests, checked, strict=True)):
                if verdict is None:
                    pending[index] = request
                else:
                    results[index] = verdict
            failed_dirs = self._make_parents([pending[i] for i in pending], pool)
            for index in list(pending):
                error = failed_dirs.get(_parent(pending[index].destination))
                if error is not None:
                    results[index] = _failed(pending.pop(index), error)

            groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
            for index, request in pending.items():
                kind = copy_kind(request.source, request.destination)
                method = _method(kind, tpc)
                if method is None:
                    results[index] = _failed(
                        request,
                        PermanentStorageError(
                            "copy", request.destination, f"no third-party copy from {request.source} (tpc=only)"
                        ),
                    )
                    continue
                groups[(method, _endpoint(request.source), _endpoint(request.destination))].append(index)

            errors: dict[int, StorageError | None] = {}
            measured: dict[int, RootCopy] = {}
            for (method, _src, _dst), indices in groups.items():
                batch = [pending[i] for i in indices]
                if method == "stream" and copy_kind(batch[0].source, batch[0].destination) == "root-tpc":
                    # Both ends xrootd, streamed (small files): XrdCl's bulk CopyProcess, not a Python loop.
                    copies = copy_root_to_root(
                        batch,
                        parallel=parallel,
                        overwrite=overwrite,
                        timeout=self._options.timeout,
                        tokens=self._options.tokens,
                        environment=XRDCL_DEFAULTS,
                    )
                    measured.update(zip(indices, copies, strict=True))
                    outcome = [c.error for c in copies]
                elif method == "stream":
                    outcome = list(pool.map(lambda r: self._stream_one(r, overwrite), batch))
                elif method == "root-bulk" and len(batch) > 1 and self.isolate_bulk:
                    outcome = []
                    for start in range(0, len(batch), ROOT_BULK_BATCH):
                        outcome += self._copy_isolated(
                            batch[start : start + ROOT_BULK_BATCH],
                            overwrite=overwrite,
                            parallel=parallel,
                            tpc=tpc,
                            pool=pool,
                        )
                elif method == "root-bulk" and len(batch) > 1:
                    # Already inside the caller's crash boundary: the bulk copy runs here; a crash ends this
                    # process, and the caller settles the batch.
                    tpc_parallel = min(parallel, ROOT_TPC_MAX_PARALLEL)
                    outcome = []
                    for start in range(0, len(batch), ROOT_BULK_BATCH):
                        part = batch[start : start + ROOT_BULK_BATCH]
                        outcome += self._filecopy(part, overwrite, tpc_parallel, tpc)
                else:
                    outcome = self._copy_in_process(batch, overwrite=overwrite, parallel=parallel, tpc=tpc, pool=pool)
                errors.update(zip(indices, outcome, strict=True))

            verified = pool.map(lambda i: self._verify(pending[i], errors[i], overwrite, verify), list(errors))
            results.update(zip(list(errors), verified, strict=True))
            for index, copy in measured.items():
                # What the destination's server reported right after the copy: the caller need not ask again.
                if results[index].ok and copy.adler32 is not None and copy.size is not None:
                    results[index] = replace(
                        results[index], size_at_destination=copy.size, adler32_at_destination=copy.adler32
                    )
        return [results[i] for i in range(len(requests))]

    def _preflight(self, request: CopyRequest, overwrite: bool) -> CopyResult | None:
        """Check the source (exists, size as announced) and an existing destination before copying."""
        try:
            source = self.stat(request.source)
            if request.size is not None and source.size != request.size:
                raise PermanentStorageError(
                    "copy", request.source, f"source has {source.size} bytes, expected {request.size}"
                )
            if request.checksum is not None:
                expected = normalise_adler32(request.checksum)
                actual = self.checksum(request.source)
                if actual != expected:
                    raise PermanentStorageError(
                        "copy", request.source, f"source adler32 {actual} differs from expected {expected}"
                    )
            if not overwrite:
                try:
                    existing = self.stat(request.destination)
                except StorageNotFoundError:
                    return None
                # Already there and identical: a retried copy is done, not failed.
                if existing.size == source.size and self.checksum(request.destination) == self.checksum(request.source):
                    return CopyResult(request=request, ok=True, bytes=0)
                raise PermanentStorageError(
                    "copy", request.destination, "destination exists with different content", errno.EEXIST
                )
        except StorageError as exc:
            return _failed(request, exc)
        except ValueError as exc:  # a malformed expected checksum
            return _failed(request, PermanentStorageError("copy", request.source, str(exc)))
        return None

    def _make_parents(self, requests: Sequence[CopyRequest], pool: ThreadPoolExecutor) -> dict[str, StorageError]:
        directories = sorted({_parent(r.destination) for r in requests})

        def make(directory: str) -> StorageError | None:
            try:
                self.mkdir_p(directory)
            except StorageError as exc:
                return exc
            return None

        return {d: e for d, e in zip(directories, pool.map(make, directories), strict=True) if e is not None}

    def _copy_in_process(
        self, batch: Sequence[CopyRequest], *, overwrite: bool, parallel: int, tpc: str, pool: ThreadPoolExecutor
    ) -> list[StorageError | None]:
        """gfal2 ``filecopy`` in this process: per file for xrootd (bulk crashes), chunked bulk otherwise."""
        kind = copy_kind(batch[0].source, batch[0].destination)
        if kind in ("root-tpc", "local", "mixed") and len(batch) > 1:
            return list(pool.map(lambda r: self._filecopy([r], overwrite, parallel, tpc)[0], batch))
        chunks = [list(batch[i::parallel]) for i in range(min(parallel, len(batch)))]
        outcome: dict[int, StorageError | None] = {}
        for offset, errors in enumerate(pool.map(lambda c: self._filecopy(c, overwrite, parallel, tpc), chunks)):
            for position, error in enumerate(errors):
                outcome[offset + position * parallel] = error
        return [outcome[i] for i in range(len(batch))]

    def _filecopy(
        self, batch: Sequence[CopyRequest], overwrite: bool, parallel: int, tpc: str
    ) -> list[StorageError | None]:
        import gfal2

        ctx = self._ctx()
        configure_copy(ctx, parallel=parallel, tpc=tpc)
        params = transfer_parameters(ctx, self._options, overwrite=overwrite)
        sources = [r.source for r in batch]
        destinations = [r.destination for r in batch]
        try:
            if len(batch) == 1:
                ctx.filecopy(params, sources[0], destinations[0])
                return [None]
            errors = ctx.filecopy(params, sources, destinations)
        except gfal2.GError as exc:
            return [storage_error("copy", d, exc) for d in destinations]
        return [None if e is None else storage_error("copy", d, e) for d, e in zip(destinations, errors, strict=True)]

    def _copy_isolated(
        self, batch: Sequence[CopyRequest], *, overwrite: bool, parallel: int, tpc: str, pool: ThreadPoolExecutor
    ) -> list[StorageError | None]:
        """A bulk xrootd ``filecopy`` in a child process. If the child dies, the files it did not finish get
        one more child, then are copied one by one."""
        answers = self._run_child(batch, overwrite=overwrite, parallel=min(parallel, ROOT_TPC_MAX_PARALLEL), tpc=tpc)
        if answers is not None:
            return answers
        unfinished = [i for i, done in enumerate(pool.map(self._identical_copy, batch)) if not done]
        outcome: list[StorageError | None] = [None] * len(batch)
        if not unfinished:
            return outcome
        retry = [batch[i] for i in unfinished]
        second = self._run_child(retry, overwrite=True, parallel=min(parallel, ROOT_TPC_MAX_PARALLEL), tpc=tpc)
        if second is None:
            second = list(
                pool.map(lambda r: None if self._identical_copy(r) else self._filecopy([r], True, 1, tpc)[0], retry)
            )
        for index, error in zip(unfinished, second, strict=True):
            outcome[index] = error
        return outcome

    def _run_child(
        self, batch: Sequence[CopyRequest], *, overwrite: bool, parallel: int, tpc: str
    ) -> list[StorageError | None] | None:
        """One bulk copy in ``python -m rawflow.storage.gfal2_storage``; None if the child crashed."""
        job = {
            "sources": [r.source for r in batch],
            "destinations": [r.destination for r in batch],
            "overwrite": overwrite,
            "parallel": parallel,
            "tpc": tpc,
            "timeout": self._options.timeout,
            "silence": self._options.silence,
            "nbstreams": self._options.nbstreams,
            "tokens": dict(self._options.tokens),
        }
        env = {**XRDCL_DEFAULTS, **os.environ}
        # The child imports this module; make sure it finds the same package as we did.
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        rounds = len(batch) // parallel + 1
        try:
            done = subprocess.run(
                [sys.executable, "-m", "rawflow.storage.gfal2_storage"],
                input=json.dumps(job),
                capture_output=True,
                text=True,
                env=env,
                timeout=self._options.timeout * rounds + 60,
            )
        except subprocess.TimeoutExpired as exc:
            log.warning("bulk copy child timed out for %d files: %s", len(batch), _tail(exc.stderr))
            return None
        if done.returncode != 0:
            log.warning(
                "bulk copy child exited with %s for %d files: %s", done.returncode, len(batch), _tail(done.stderr)
            )
            return None
        answers = json.loads(done.stdout)["errors"]
        return [
            None if a is None else storage_error("copy", r.destination, ErrnoError(a["code"], a["message"]))
            for r, a in zip(batch, answers, strict=True)
        ]

    def _identical_copy(self, request: CopyRequest) -> bool:
        return self._identical(request.source, request.destination)

    def _identical(self, source: str, destination: str) -> bool:
        try:
            return self.stat(source).size == self.stat(destination).size and self.checksum(source) == self.checksum(
                destination
            )
        except StorageError:
            return False

    def _stream_one(self, request: CopyRequest, overwrite: bool) -> StorageError | None:
        """Copy through this process (read from the source, write to the destination), no third party."""
        ctx = self._ctx()
        try:
            if overwrite and self.exists(request.destination):
                self.unlink(request.destination)
            reader = self._call("open", request.source, ctx.open, request.source, "r")
            writer = self._call("open", request.destination, ctx.open, request.destination, "w")
            while chunk := self._call("read", request.source, reader.read_bytes, STREAM_CHUNK):
                view = memoryview(chunk)
                while view:
                    written = int(self._call("write", request.destination, writer.write, bytes(view)))
                    if written <= 0:
                        raise TransientStorageError("write", request.destination, "server accepted no bytes")
                    view = view[written:]
            del writer
        except StorageError as exc:
            return exc
        return None

    def _verify(
        self, request: CopyRequest, error: StorageError | None, overwrite: bool, verify: bool = True
    ) -> CopyResult:
        """Compare size and adler32 of both ends; delete a destination that differs from its source."""
        if error is not None:
            if error.errno == errno.EEXIST and not overwrite and self._identical(request.source, request.destination):
                return CopyResult(request=request, ok=True, bytes=0)
            return _failed(request, error)
        if not verify:
            return CopyResult(request=request, ok=True, bytes=request.size or 0)
        try:
            source_sum = self.checksum(request.source)
            destination = self.stat(request.destination)
            destination_sum = self.checksum(request.destination)
        except StorageError as exc:
            return _failed(request, exc)
        if destination_sum != source_sum or (request.size is not None and destination.size != request.size):
            try:
                self.unlink(request.destination)
            except StorageError:
                log.warning("could not remove corrupt copy %s", request.destination)
            return _failed(
                request,
                TransientStorageError(
                    "copy",
                    request.destination,
                    f"copy differs from source: adler32 {destination_sum} vs {source_sum}, {destination.size} bytes",
                ),
            )
        return CopyResult(request=request, ok=True, bytes=destination.size)


class ErrnoError(Exception):
    """An error in the shape of ``gfal2.GError`` (``code`` = errno, ``message``) for ``storage_error``: one
    reported by the copy child, or an XrdCl status (``xrdcl_copy``)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _tail(text: str | bytes | None, limit: int = 500) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "").strip()[-limit:]


def _failed(request: CopyRequest, error: StorageError) -> CopyResult:
    return CopyResult(request=request, ok=False, error=str(error), transient=isinstance(error, TransientStorageError))


def _method(kind: str, tpc: str) -> str | None:
    """How to copy a pair of this kind under a TPC mode; None when the mode forbids every way."""
    if tpc == "never":
        return "local" if kind == "local" else "stream"
    if kind == "root-tpc":
        return "root-bulk"
    if kind == "http-tpc":
        return "http-bulk"
    if tpc == "only":
        return None
    return "local" if kind == "local" else "mixed"


GFAL2_LOGGERS = ("gfal2", "davix")


def quiet_gfal2_logs(level: int = logging.WARNING) -> None:
    """gfal2 forwards its messages to Python logging (logger ``gfal2``), every Davix request and header at
    INFO: a task log would grow by kilobytes per file. Keep gfal2, Davix and XrdCl at WARNING."""
    for name in GFAL2_LOGGERS:
        logging.getLogger(name).setLevel(level)
    os.environ.setdefault("XRD_LOGLEVEL", "Error")
    import gfal2

    gfal2.set_verbose(gfal2.verbose_level.warning if level >= logging.WARNING else gfal2.verbose_level.normal)


_HASHED_CA_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+")


def skip_ca_bundle_reload() -> bool:
    """Davix configures its TLS session again for every request and so re-reads OpenSSL's default CA bundle
    file (~140 certificates): ~20 ms of every HTTPS request (measured: a WebDAV stat 25 ms -> 0.4 ms without
    it). Where OpenSSL's default CA directory is hashed (Debian's /etc/ssl/certs), the same authorities are
    found there on demand, so the bundle file is pointed at an empty one: trust is unchanged, and the grid's
    own authorities still come from X509_CERT_DIR. Left alone when SSL_CERT_FILE names another file than
    OpenSSL's default bundle (an operator's choice) or the directory is not hashed (a bundle-only layout).
    True when it changed the environment.

    It changes the process environment, which every TLS user of the process and its children then sees (httpx,
    for one, takes SSL_CERT_FILE as its only CA file): call it only in a process that runs nothing but gfal2 —
    the copy children (``rawflow.transfer.copy_worker``, this module's ``__main__``) — never in a task process."""
    defaults = ssl.get_default_verify_paths()
    chosen = os.environ.get("SSL_CERT_FILE")
    if chosen is not None and os.path.realpath(chosen) != os.path.realpath(defaults.openssl_cafile):
        return False
    capath = os.environ.get("SSL_CERT_DIR") or defaults.openssl_capath
    try:
        hashed = any(_HASHED_CA_NAME.fullmatch(name) for name in os.listdir(capath))
    except OSError:
        return False
    if hashed:
        os.environ["SSL_CERT_FILE"] = os.devnull
    return hashed


def new_context(options: _Options) -> Any:
    """A gfal2 context with the tokens set as bearer credentials (the first gfal2 use in a process)."""
    for key, value in XRDCL_DEFAULTS.items():
        os.environ.setdefault(key, value)
    quiet_gfal2_logs()
    import gfal2

    # Creating a context blocks nearly every signal (SIGTERM, SIGINT included) in the calling thread: the
    # process would then ignore Ctrl-C and "stop", and every child it starts would inherit the mask.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        ctx = gfal2.creat_context()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    ctx.set_user_agent("rawflow", "0.1")
    # gfal2 asks every WebDAV endpoint for an SE-issued macaroon before each operation: a POST that a server
    # without macaroons answers 501 and closes, so every request paid a new TLS connection (~30 ms measured).
    # Rawflow's tokens come from its Connections (``tokens``/``bearer_token``), never from the SE.
    ctx.set_opt_boolean("HTTP PLUGIN", "RETRIEVE_BEARER_TOKEN", False)
    # Davix's "operation timeout" is neon's read timeout: the longest a request may wait for a byte. gfal2's
    # default (300 s) let one stalled keep-alive request hold a whole chunk for five minutes (seen 1 in ~2
    # rounds of 1,000 files against XrdHttp 5.5); a healthy server answers a request or sends transfer markers
    # within seconds, and neon then retries on a new connection.
    ctx.set_opt_integer("HTTP PLUGIN", "OPERATION_TIMEOUT", options.silence)
    for prefix, token in options.tokens:
        ctx.cred_set(prefix, ctx.cred_new("BEARER", token))
    return ctx


def configure_copy(ctx: Any, *, parallel: int, tpc: str) -> None:
    ctx.set_opt_integer("XROOTD PLUGIN", "PARALLEL_COPIES", parallel)
    # tpc=only: an HTTP copy must be third-party (pull, then push), never streamed through us.
    ctx.set_opt_boolean("HTTP PLUGIN", "ENABLE_STREAM_COPY", tpc != "only")


def transfer_parameters(ctx: Any, options: _Options, *, overwrite: bool) -> Any:
    params = ctx.transfer_parameters()
    params.overwrite = overwrite
    params.create_parent = True
    import gfal2

    params.set_checksum(gfal2.checksum_mode.none, "", "")  # verified afterwards: gfal2's bulk checksum path crashes
    params.timeout = options.timeout
    params.nbstreams = options.nbstreams
    return params


def _child_main() -> int:
    """The copy child: a job as JSON on stdin, ``{"errors": [null | {code, message}]}`` on stdout."""
    skip_ca_bundle_reload()  # a process of gfal2 copies only
    job = json.load(sys.stdin)
    options = _Options(
        timeout=int(job["timeout"]),
        nbstreams=int(job["nbstreams"]),
        tokens=tuple(sorted(job["tokens"].items())),
        silence=int(job.get("silence", 30)),
    )
    import gfal2

    ctx = new_context(options)
    configure_copy(ctx, parallel=int(job["parallel"]), tpc=job["tpc"])
    params = transfer_parameters(ctx, options, overwrite=bool(job["overwrite"]))
    try:
        errors = ctx.filecopy(params, job["sources"], job["destinations"])
        answers = [None if e is None else {"code": e.code, "message": e.message} for e in errors]
    except gfal2.GError as exc:
        answers = [{"code": exc.code, "message": exc.message} for _ in job["sources"]]
    json.dump({"errors": answers}, sys.stdout)
    return 0


__all__ = ["ErrnoError", "Gfal2Storage", "copy_kind", "quiet_gfal2_logs", "storage_error"]

if __name__ == "__main__":
    sys.exit(_child_main())
