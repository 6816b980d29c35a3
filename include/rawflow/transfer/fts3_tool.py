"""The FTS3 backend, through the official ``fts3`` REST client (``fts3.rest.client.easy``).

Authentication is a bearer token (``Context(url, fts_access_token=token)``; no X.509, no delegation); the
token comes from the caller and never reaches a log or a repr. Jobs are submitted with FTS doing the checksum
comparison (``verify_checksum``), ``overwrite=False``, alternative sources appended to ``sources`` (the
client's ``add_alternative_source`` is broken), multihop chains for routed files, and a deterministic job id
(``id_generator="deterministic"``, ``sid`` = our job key): resubmitting a job gets the same FTS job back.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import requests

from rawflow.transfer.base import (
    FileState,
    FileStatus,
    JobState,
    JobStatus,
    TransferAuthError,
    TransferBackendError,
    TransferError,
    TransferFile,
    TransferJob,
    TransferJobError,
    UnknownJobError,
    job_state_of,
)

_FILE_STATES = {
    "SUBMITTED": FileState.SUBMITTED,
    "READY": FileState.SUBMITTED,
    "SCHEDULED": FileState.SUBMITTED,
    "STAGING": FileState.ACTIVE,
    "STARTED": FileState.ACTIVE,
    "ACTIVE": FileState.ACTIVE,
    "ARCHIVING": FileState.ACTIVE,
    "FINISHED": FileState.FINISHED,
    "FAILED": FileState.FAILED,
    "CANCELED": FileState.CANCELED,
}


class Fts3Transfertool:
    name = "fts3"
    prechecks_destinations = False

    def __init__(
        self,
        endpoint: str,
        token: str,
        *,
        verify_checksum: str = "both",
        priority: int = 3,
        retry: int = -1,
        verify_tls: bool | str = True,
        timeout: float = 30.0,
        vo_metadata: Mapping[str, str] | None = None,
    ) -> None:
        if not token:
            raise TransferAuthError("the FTS3 backend needs a bearer token")
        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self.verify_checksum = verify_checksum
        self.priority = priority
        self.retry = retry
        self.verify_tls = verify_tls
        self.timeout = timeout
        self.job_metadata = dict(vo_metadata or {})
        self._context: Any = None

    def __repr__(self) -> str:
        return f"Fts3Transfertool({self.endpoint!r})"

    @property
    def context(self) -> Any:
        """The client context, made on first use (it calls the server to check the endpoint)."""
        if self._context is None:
            from fts3.rest.client import context as fts_context

            self._context = self._call(
                lambda: fts_context.Context(
                    self.endpoint,
                    fts_access_token=self._token,
                    verify=self.verify_tls,
                    connectTimeout=self.timeout,
                    timeout=self.timeout,
                )
            )
        return self._context

    def whoami(self) -> dict[str, Any]:
        from fts3.rest.client import easy

        result: dict[str, Any] = self._call(lambda: easy.whoami(self.context))
        return result

    def job_description(self, job: TransferJob) -> dict[str, Any]:
        """The FTS job document (``easy.new_job``) for one of our jobs."""
        from fts3.rest.client import easy

        transfers: list[dict[str, Any]] = []
        for f in job.files:
            transfers.extend(self._transfers_for(f, job.activity))
        description: dict[str, Any] = easy.new_job(
            transfers=transfers,
            verify_checksum=self.verify_checksum,
            overwrite=False,
            multihop=job.multihop,
            retry=self.retry,
            priority=self.priority,
            metadata={**self.job_metadata, **dict(job.metadata), "rawflow_key": job.key},
            id_generator=easy.JobIdGenerator.deterministic,
            sid=job.key,
        )
        return description

    @staticmethod
    def _transfers_for(f: TransferFile, activity: str) -> list[dict[str, Any]]:
        from fts3.rest.client import easy

        checksum = f"ADLER32:{f.adler32}"
        metadata = {"lfn": f.lfn}
        if f.hops:
            # One transfer per hop; FTS runs them in order and only the first one has a choice of source.
            legs = [f.sources[0], *f.hops, f.destination]
            return [
                easy.new_transfer(src, dst, checksum=checksum, filesize=f.size, activity=activity, metadata=metadata)
                for src, dst in itertools.pairwise(legs)
            ]
        transfer: dict[str, Any] = easy.new_transfer(
            f.sources[0], f.destination, checksum=checksum, filesize=f.size, activity=activity, metadata=metadata
        )
        transfer["sources"].extend(f.sources[1:])  # alternatives (easy.add_alternative_source is broken)
        return [transfer]

    def submit(self, jobs: Sequence[TransferJob]) -> list[str]:
        from fts3.rest.client import easy

        ids: list[str] = []
        for job in jobs:
            description = self.job_description(job)
            job_id: str = self._call(lambda d=description: easy.submit(self.context, d))
            ids.append(job_id)
        return ids

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        from fts3.rest.client import easy

        if not job_ids:
            return {}
        raw = self._call(lambda: easy.get_jobs_statuses(self.context, list(job_ids), list_files=True), ids=job_ids)
        documents = raw if isinstance(raw, list) else [raw]
        return {str(d["job_id"]): _job_status(d) for d in documents}

    def cancel(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        from fts3.rest.client import easy

        states: dict[str, JobState] = {}
        for job_id in job_ids:
            result = self._call(lambda j=job_id: easy.cancel(self.context, j), ids=[job_id])
            state = result.get("job_state") if isinstance(result, Mapping) else result
            states[job_id] = JobState(str(state)) if str(state) in JobState.__members__ else JobState.CANCELED
        return states

    def close(self) -> None:
        self._context = None

    @staticmethod
    def _call(fn: Any, ids: Sequence[str] = ()) -> Any:
        """Run a client call, turning its exceptions into our typed errors (messages carry no token)."""
        from fts3.rest.client import exceptions as fts_errors

        try:
            return fn()
        except fts_errors.Unauthorized as exc:
            raise TransferAuthError(f"FTS3 refused the token: {exc}") from None
        except fts_errors.NotFound:
            raise UnknownJobError(",".join(ids) or "?") from None
        except (fts_errors.TryAgain, fts_errors.ServerError, fts_errors.BadEndpoint) as exc:
            raise TransferBackendError(f"FTS3 unavailable: {exc}") from None
        except fts_errors.ClientError as exc:
            raise TransferJobError(f"FTS3 rejected the request: {exc}") from None
        except fts_errors.FTS3ClientException as exc:
            raise TransferError(f"FTS3 client error: {exc}") from None
        except requests.RequestException as exc:
            raise TransferBackendError(f"FTS3 unreachable: {type(exc).__name__}") from None


def _file_state(raw: object) -> FileState | None:
    """Our file state for an FTS file state; None for NOT_USED (an alternative or later hop never tried)."""
    return _FILE_STATES.get(str(raw))


def _job_status(document: Mapping[str, Any]) -> JobStatus:
    rows = list(document.get("files") or [])
    multihop = document.get("job_type") == "H"
    # One logical file per destination (its alternatives share it); a multihop chain is one file.
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault("" if multihop else str(row.get("dest_surl")), []).append(row)
    files = tuple(_file_status(group, multihop=multihop) for group in groups.values())
    raw_state = str(document.get("job_state"))
    state = JobState(raw_state) if raw_state in JobState.__members__ else job_state_of(files)
    if raw_state in ("STAGING", "READY", "ACTIVE", "ARCHIVING"):
        state = JobState.ACTIVE
    return JobStatus(str(document["job_id"]), state, files)


def _file_status(rows: Sequence[Mapping[str, Any]], *, multihop: bool) -> FileStatus:
    """One logical file from its FTS rows: alternatives (the one tried last wins) or the hops of a chain."""
    final = rows[-1]
    metadata = final.get("file_metadata")
    lfn = str(metadata.get("lfn", "")) if isinstance(metadata, Mapping) else ""
    destination = str(final.get("dest_surl"))
    if multihop:
        states = [_file_state(r.get("file_state")) for r in rows]
        failed = next((r for r, s in zip(rows, states, strict=True) if s is FileState.FAILED), None)
        if failed is not None:
            state, reason = FileState.FAILED, str(failed.get("reason") or "a hop failed")
        elif all(s is FileState.FINISHED for s in states):
            state, reason = FileState.FINISHED, None
        elif any(s is FileState.CANCELED for s in states):
            state, reason = FileState.CANCELED, "canceled"
        else:
            state, reason = FileState.ACTIVE, None
        source = str(rows[0].get("source_surl"))
        moved = int(final.get("transferred") or 0) if state is FileState.FINISHED else 0
        return FileStatus(lfn, destination, state, source, reason, moved)
    used = [r for r in rows if _file_state(r.get("file_state")) is not None]
    if not used:
        return FileStatus(lfn, destination, FileState.SUBMITTED, None, None)
    best = next((r for r in used if _file_state(r.get("file_state")) is FileState.FINISHED), used[-1])
    state = _file_state(best.get("file_state")) or FileState.SUBMITTED
    reason = str(best.get("reason")) if state is FileState.FAILED and best.get("reason") else None
    return FileStatus(
        lfn,
        destination,
        state,
        str(best.get("source_surl")),
        reason,
        int(best.get("transferred") or 0) if state is FileState.FINISHED else 0,
    )
