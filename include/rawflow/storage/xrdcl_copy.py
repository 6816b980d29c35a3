"""Streamed root:// → root:// bulk copies with XrdCl's ``CopyProcess`` (Debian's ``python3-xrootd``).

Small files between two xrootd servers are streamed, not third-party copied (a TPC costs a fixed ~2.5 s of
client polling per file). gfal2 streams them one ``open``/``read``/``write`` at a time from Python, and its bulk
xrootd copy is always third-party; ``CopyProcess`` is the engine ``xrdcp --parallel`` runs. Measured on 2 idle
cores, 2,000 × 4 KiB from the local Tier-0 to IN2P3 (2026-12-03): the copy engine over gfal2 streaming 287 files/s
at 5.4 ms CPU per file (copy child, destination stat and checksum); ``CopyProcess`` 841 files/s at 0.9 ms, plus
0.1 ms per destination stat; gfal2's bulk (third-party) copy 5 files/s; ``xrdcp --parallel 20`` 1,706 files/s.

Each copy asks the destination server for the new file's adler32 (``checksummode="target"``: the replica is
checksummed once, at its destination; the source is not asked again) and the new file is stat'ed, so the caller
gets what the destination holds. ``posc`` (persist on successful close): a copy cut short leaves no file behind.

Like gfal2, XrdCl is native code: call this only inside a crash boundary (the copy engine's child process).
"""

from __future__ import annotations

import atexit
import errno
import functools
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from rawflow.errors import PermanentStorageError, StorageError
from rawflow.storage.base import CopyRequest

# XRootD server error numbers (XProtocol.hh) → POSIX errno, so storage_error() types them as gfal2's are.
_SERVER_ERRNO = {
    3005: errno.EIO,  # kXR_FSError
    3007: errno.EIO,  # kXR_IOError
    3008: errno.ENOMEM,  # kXR_NoMemory
    3010: errno.EACCES,  # kXR_NotAuthorized
    3011: errno.ENOENT,  # kXR_NotFound
    3012: errno.EREMOTEIO,  # kXR_ServerError
    3013: errno.ENOSPC,  # kXR_NoSpace
    3017: errno.EINVAL,  # kXR_InvalidRequest
    3018: errno.EEXIST,  # kXR_ItExists
    3019: errno.EIO,  # kXR_ChkSumErr
    3024: errno.EBUSY,  # kXR_Overloaded
    3026: errno.ENOTSUP,  # kXR_Unsupported
    3030: errno.EACCES,  # kXR_AuthFailed
}
# Client-side status codes (XrdClStatus.hh): the network and time-outs pass; a checksum mismatch is retried.
_CLIENT_ERRNO = {
    101: errno.EHOSTUNREACH,  # errInvalidAddr
    102: errno.ECONNRESET,  # errSocketError
    103: errno.ETIMEDOUT,  # errSocketTimeout
    104: errno.ECONNRESET,  # errSocketDisconnected
    107: errno.ECONNRESET,  # errStreamDisconnect
    108: errno.ECONNREFUSED,  # errConnectionError
    109: errno.ECONNRESET,  # errInvalidSession
    110: errno.EPROTO,  # errTlsError
    206: errno.ETIMEDOUT,  # errOperationExpired
    207: errno.ETIMEDOUT,  # errOperationInterrupted
    305: errno.EIO,  # errCheckSumError: the destination differs; posc/rmBadCksum removed it
}


@dataclass(frozen=True, slots=True)
class RootCopy:
    """One copy's outcome: an error, or what the destination holds (size from a stat, adler32 from its server)."""

    error: StorageError | None
    size: int | None = None
    adler32: str | None = None


def status_errno(status: Any) -> int:
    """The POSIX errno of a failed XrdCl status (EREMOTEIO when it maps to none)."""
    code = _SERVER_ERRNO.get(int(status.errno)) if status.errno else _CLIENT_ERRNO.get(int(status.code))
    return code if code is not None else errno.EREMOTEIO


def with_token(url: str, tokens: Sequence[tuple[str, str]]) -> str:
    """``url`` with the bearer token of its longest matching prefix as the ``authz`` CGI (as gfal2 sends it)."""
    matches = [(prefix, token) for prefix, token in tokens if url.startswith(prefix)]
    if not matches:
        return url
    token = max(matches, key=lambda pair: len(pair[0]))[1]
    return f"{url}{'&' if '?' in url else '?'}authz={quote('Bearer ' + token)}"


@functools.cache
def xrootd_client() -> Any:
    """``XRootD.client``, with its exit handler replaced by the part Rawflow needs.

    XRootD's handler walks every object of the process to close open XRootD ``File`` objects, then stops XrdCl's
    threads (without that the interpreter can hang at exit). Rawflow opens no ``File``; and where Airflow's lazy
    objects live in the same process, the walk imports modules during exit (seen at the end of a test run: "Unable
    to import cloudpickle" logging errors). The threads are still stopped. A bindings layout without these names
    (not 5.5's) keeps its own handler."""
    from XRootD import client

    try:
        from pyxrootd import client as native
        from XRootD.client import finalize

        handler, stop_threads = finalize.finalize, getattr(native, "__XrdCl_Stop_Threads")
    except (ImportError, AttributeError):
        return client
    atexit.unregister(handler)
    atexit.register(stop_threads)
    return client


def copy_root_to_root(
    requests: Sequence[CopyRequest],
    *,
    parallel: int,
    overwrite: bool,
    timeout: int,
    tokens: Sequence[tuple[str, str]] = (),
    environment: Mapping[str, str] | None = None,
) -> list[RootCopy]:
    """Copy every request (root:// both ends) in one ``CopyProcess``; one outcome per request, in order.

    ``environment``: XrdCl settings (``XRD_*``) to set first if the process has none; XrdCl reads them once.
    """
    from rawflow.storage.gfal2_storage import ErrnoError, storage_error

    for key, value in (environment or {}).items():
        os.environ.setdefault(key, value)
    try:
        client = xrootd_client()
    except ImportError:
        missing = PermanentStorageError(
            "copy", requests[0].destination if requests else "", "XRootD Python bindings missing (python3-xrootd)"
        )
        return [RootCopy(missing) for _ in requests]
    process = client.CopyProcess()
    # Sequential CopyProcess stops at the first failure; in parallel every job runs and reports.
    process.parallel(max(2, int(parallel)))
    for request in requests:
        process.add_job(
            with_token(request.source, tokens),
            with_token(request.destination, tokens),
            force=overwrite,
            posc=True,
            mkdir=True,
            checksummode="target",
            checksumtype="adler32",
            rmBadCksum=True,
            cptimeout=int(timeout),
        )
    prepared = process.prepare()
    if not prepared.ok:
        error = ErrnoError(errno.EINVAL, str(prepared.message))
        return [RootCopy(storage_error("copy", r.destination, error)) for r in requests]
    _status, results = process.run()
    outcomes: list[RootCopy] = []
    for request, result in zip(requests, results, strict=True):
        status = result.get("status")
        if status is None or not status.ok:
            error = (
                ErrnoError(status_errno(status), str(status.message).strip())
                if status is not None
                else ErrnoError(errno.EREMOTEIO, "not run")
            )
            outcomes.append(RootCopy(storage_error("copy", request.destination, error)))
            continue
        algorithm, _, value = str(result.get("targetCheckSum", "")).partition(":")
        outcomes.append(RootCopy(None, adler32=value.lower().zfill(8) if algorithm == "adler32" and value else None))

    servers = {f"{p.scheme}://{p.netloc}" for p in (urlsplit(r.destination) for r in requests)}
    by_server = {server: client.FileSystem(server) for server in servers}

    def measure(pair: tuple[CopyRequest, RootCopy]) -> RootCopy:
        request, outcome = pair
        if outcome.error is not None:
            return outcome
        parts = urlsplit(with_token(request.destination, tokens))
        fs = by_server[f"{parts.scheme}://{parts.netloc}"]
        status, info = fs.stat(f"{parts.path}?{parts.query}" if parts.query else parts.path)
        if not status.ok or info is None:
            return RootCopy(None, adler32=outcome.adler32)  # unmeasured: the caller asks again
        return RootCopy(None, size=int(info.size), adler32=outcome.adler32)

    with ThreadPoolExecutor(max_workers=max(1, min(int(parallel), 16)), thread_name_prefix="xrdcl-stat") as pool:
        return list(pool.map(measure, list(zip(requests, outcomes, strict=True))))


__all__ = ["RootCopy", "copy_root_to_root", "status_errno", "with_token"]
