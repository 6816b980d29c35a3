"""FTS3-REST TEST DOUBLE — not FTS3. A small HTTP server for tests and the local grid only.

It serves the endpoints the ``fts3`` Python client (``fts3.rest.client.easy``) calls, with FTS's JSON shapes:
``GET /`` (API version), ``GET /whoami``, ``POST /jobs``, ``GET /jobs/{id}``, ``GET /jobs/{id1,id2}?files=…``,
``GET /jobs/{id}/files``, ``GET /jobs/{id}/dm``, ``GET /jobs?state_in=…``, ``DELETE /jobs/{id[,id]}``.
Paths arrive with a leading double slash (the client joins ``endpoint + "/" + "/jobs"``). Every endpoint but
``GET /`` needs ``Authorization: Bearer <token>``.

It really copies: a worker thread runs each job through :class:`rawflow.transfer.engine.CopyEngine` (gfal2, in
a child process), honouring alternative ``sources[]`` (tried in order, the rest ``NOT_USED``), ``multihop``
(a chain of transfers, one hop after the other), ``verify_checksum`` and ``overwrite``. With
``id_generator="deterministic"`` and a ``sid`` the job id is ``uuid5(namespace, vo + sid)`` as in FTS, so
a resubmission returns the same job and copies nothing twice.

What it leaves out: delegation and X.509, staging and deletion jobs, retries, scheduling and optimiser,
per-link limits, banning. Run it with ``python -m rawflow.testing.fts3_double --port N`` and the token in
``$RAWFLOW_FTS3_DOUBLE_TOKEN`` (never on the command line).
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import queue
import signal
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rawflow.checksum import normalise_adler32
from rawflow.transfer.engine import CopyEngine, CopyOutcome, CopyTask, StorageSpec

log = logging.getLogger(__name__)

API_VERSION = {"major": 3, "minor": 14, "patch": 2}
JOB_ID_NAMESPACE = uuid.UUID("5f1c0e8e-7c41-4d6e-9a51-3b1f0c2d9e77")
TOKEN_ENV = "RAWFLOW_FTS3_DOUBLE_TOKEN"
STORAGE_ENV = "RAWFLOW_FTS3_DOUBLE_STORAGE"
TERMINAL = ("FINISHED", "FINISHEDDIRTY", "FAILED", "CANCELED")


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class _FileRow:
    """One row of FTS's t_file: one (source, destination) pair; alternatives share a file_index."""

    file_id: int
    file_index: int
    source_surl: str
    dest_surl: str
    state: str
    checksum: str | None
    filesize: int | None
    metadata: Any
    activity: str
    reason: str = ""
    start_time: str | None = None
    finish_time: str | None = None
    transferred: int = 0

    def to_json(self, job_id: str) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "job_id": job_id,
            "file_index": self.file_index,
            "file_state": self.state,
            "source_surl": self.source_surl,
            "dest_surl": self.dest_surl,
            "source_se": _se(self.source_surl),
            "dest_se": _se(self.dest_surl),
            "reason": self.reason,
            "checksum": self.checksum,
            "filesize": self.filesize,
            "user_filesize": self.filesize,
            "file_metadata": self.metadata,
            "activity": self.activity,
            "start_time": self.start_time,
            "finish_time": self.finish_time,
            "transferred": self.transferred,
        }


@dataclass
class _Job:
    job_id: str
    job_type: str  # N normal, R multiple replicas, H multihop
    params: dict[str, Any]
    rows: list[_FileRow]
    submit_time: str = field(default_factory=_now)
    state: str = "SUBMITTED"
    job_finished: str | None = None
    reason: str = ""
    cancel_requested: bool = False

    def to_json(self, vo: str, user: str) -> dict[str, Any]:
        first = self.rows[0]
        return {
            "job_id": self.job_id,
            "job_state": self.state,
            "job_type": self.job_type,
            "source_se": _se(first.source_surl),
            "dest_se": _se(self.rows[-1].dest_surl),
            "vo_name": vo,
            "user_dn": user,
            "cred_id": "",
            "submit_time": self.submit_time,
            "job_finished": self.job_finished,
            "reason": self.reason,
            "priority": self.params.get("priority") or 3,
            "verify_checksum": _verify_mode(self.params.get("verify_checksum")),
            "overwrite_flag": bool(self.params.get("overwrite")),
            "job_metadata": self.params.get("job_metadata"),
            "retry": self.params.get("retry", 0),
            "retry_delay": self.params.get("retry_delay", 0),
        }


def _se(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _verify_mode(value: object) -> str:
    """FTS's verify_checksum: a bool (True = both ends) or source|target|both|none."""
    if value is True:
        return "both"
    if value in (False, None, ""):
        return "none"
    if value in ("source", "target", "both", "none"):
        return str(value)
    raise ApiError(HTTPStatus.BAD_REQUEST, f"verify_checksum {value!r} is not one of source, target, both, none")


def _expected_adler32(checksum: object) -> str | None:
    if checksum in (None, "", "ADLER32", "adler32"):
        return None
    if not isinstance(checksum, str) or not checksum.lower().startswith("adler32:"):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"checksum {checksum!r}: only ADLER32[:hex] is supported here")
    try:
        return normalise_adler32(checksum)
    except ValueError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, str(exc)) from None


class Fts3Double:
    """The server state: jobs, a queue, a worker that copies. ``start()`` serves on 127.0.0.1."""

    def __init__(
        self,
        *,
        token: str,
        storage: StorageSpec | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        vo: str = "juno",
        user_dn: str = "/DC=org/DC=rawflow/CN=fts3-double-user",
        isolate: bool = True,
        parallel: int = 10,
    ) -> None:
        if not token:
            raise ValueError("the FTS3 test double needs a bearer token")
        self._token = token.encode()
        self.vo = vo
        self.user_dn = user_dn
        self.engine = CopyEngine(storage, parallel=parallel, isolate=isolate)
        self.jobs: dict[str, _Job] = {}
        self.copies = 0  # files the worker actually copied (not skipped, not failed): tests count resubmissions
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        # Cleared by a test to keep submitted jobs SUBMITTED (as a busy FTS does) until it is set again.
        self.gate = threading.Event()
        self.gate.set()
        self._next_file_id = 1
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def token(self) -> str:
        """The bearer token clients must present (tests hand it to the client)."""
        return self._token.decode()

    def __repr__(self) -> str:
        return f"Fts3Double({self.url!r}, jobs={len(self.jobs)})"

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Fts3Double:
        for target, name in ((self._server.serve_forever, "fts3-double-http"), (self._work, "fts3-double-worker")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self.gate.set()
        self._queue.put(None)
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=30)

    def __enter__(self) -> Fts3Double:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- auth -------------------------------------------------------------------------------------------------
    def authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), self._token)

    # -- submission -------------------------------------------------------------------------------------------
    def submit(self, body: Mapping[str, Any]) -> str:
        if body.get("delete") or body.get("staging"):
            raise ApiError(HTTPStatus.BAD_REQUEST, "the FTS3 test double does not run deletion or staging jobs")
        files = body.get("files")
        if not isinstance(files, list) or not files:
            raise ApiError(HTTPStatus.BAD_REQUEST, "No transfers or namespace operations specified")
        params = dict(body.get("params") or {})
        _verify_mode(params.get("verify_checksum"))
        multihop = bool(params.get("multihop"))
        pairs = [self._pairs(f) for f in files]
        if multihop:
            job_type = "H"
            if any(len(p) != 1 for p in pairs):
                raise ApiError(HTTPStatus.BAD_REQUEST, "multihop transfers take one source and one destination each")
            chain = [p[0] for p in pairs]
            if any(chain[i][1] != chain[i + 1][0] for i in range(len(chain) - 1)):
                raise ApiError(HTTPStatus.BAD_REQUEST, "multihop: each hop must start where the previous one ended")
        elif any(len(p) > 1 for p in pairs):
            if len(files) > 1:
                raise ApiError(HTTPStatus.BAD_REQUEST, "Multiple replicas jobs can only have one unique file")
            job_type = "R"
        else:
            job_type = "N"
        job_id = self._job_id(params)
        with self._lock:
            if job_id in self.jobs:
                return job_id  # deterministic id already known: the same job, nothing copied again
            rows: list[_FileRow] = []
            for index, (f, file_pairs) in enumerate(zip(files, pairs, strict=True)):
                for n, (source, destination) in enumerate(file_pairs):
                    rows.append(
                        _FileRow(
                            file_id=self._next_file_id,
                            file_index=0 if job_type == "R" else index,
                            source_surl=source,
                            dest_surl=destination,
                            state="NOT_USED" if n > 0 or (multihop and index > 0) else "SUBMITTED",
                            checksum=f.get("checksum"),
                            filesize=f.get("filesize"),
                            metadata=f.get("metadata"),
                            activity=str(f.get("activity") or "default"),
                        )
                    )
                    self._next_file_id += 1
            for row in rows:
                _expected_adler32(row.checksum)
            self.jobs[job_id] = _Job(job_id=job_id, job_type=job_type, params=params, rows=rows)
        self._queue.put(job_id)
        log.info("job %s submitted: %d file rows, type %s", job_id, len(rows), job_type)
        return job_id

    @staticmethod
    def _pairs(entry: object) -> list[tuple[str, str]]:
        if not isinstance(entry, Mapping):
            raise ApiError(HTTPStatus.BAD_REQUEST, "each file must be an object with sources and destinations")
        sources, destinations = entry.get("sources"), entry.get("destinations")
        if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
            raise ApiError(HTTPStatus.BAD_REQUEST, "a file needs a non-empty list of sources")
        if not isinstance(destinations, list) or len(destinations) != 1 or not isinstance(destinations[0], str):
            raise ApiError(HTTPStatus.BAD_REQUEST, "the FTS3 test double takes exactly one destination per file")
        return [(s, destinations[0]) for s in sources]

    def _job_id(self, params: Mapping[str, Any]) -> str:
        if params.get("id_generator") == "deterministic":
            sid = params.get("sid")
            if not isinstance(sid, str) or not sid:
                raise ApiError(HTTPStatus.BAD_REQUEST, "id_generator=deterministic needs a sid")
            return str(uuid.uuid5(JOB_ID_NAMESPACE, self.vo + sid))
        return str(uuid.uuid1())

    # -- queries ----------------------------------------------------------------------------------------------
    def job_json(self, job_id: str, file_fields: Sequence[str] | None = None) -> dict[str, Any]:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise ApiError(HTTPStatus.NOT_FOUND, f"No job with the id {job_id} has been found")
            out = job.to_json(self.vo, self.user_dn)
            if file_fields is not None:
                out["files"] = [
                    {k: v for k, v in row.to_json(job_id).items() if not file_fields or k in file_fields}
                    for row in job.rows
                ]
            return out

    def files_json(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise ApiError(HTTPStatus.NOT_FOUND, f"No job with the id {job_id} has been found")
            return [row.to_json(job_id) for row in job.rows]

    def list_jobs(self, states: Sequence[str] | None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                job.to_json(self.vo, self.user_dn) for job in self.jobs.values() if not states or job.state in states
            ]

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise ApiError(HTTPStatus.NOT_FOUND, f"No job with the id {job_id} has been found")
            if job.state == "SUBMITTED":
                for row in job.rows:
                    row.state = "CANCELED"
                    row.reason = "Job canceled by the user"
                job.state, job.reason, job.job_finished = "CANCELED", "Job canceled by the user", _now()
            elif job.state == "ACTIVE":
                job.cancel_requested = True  # copies in flight finish; FTS would kill them
        return self.job_json(job_id)

    # -- the worker -------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            self.gate.wait()
            try:
                self._run(job_id)
            except Exception as exc:  # the worker must survive one bad job
                log.exception("job %s crashed the worker", job_id)
                with self._lock:
                    job = self.jobs[job_id]
                    for row in job.rows:
                        if row.state not in ("FINISHED", "FAILED", "NOT_USED", "CANCELED"):
                            row.state, row.reason = "FAILED", f"internal error: {exc}"
                    job.state, job.reason, job.job_finished = "FAILED", str(exc), _now()

    def _run(self, job_id: str) -> None:
        with self._lock:
            job = self.jobs[job_id]
            if job.state != "SUBMITTED":
                return
            job.state = "ACTIVE"
            for row in job.rows:
                if row.state == "SUBMITTED":
                    row.state, row.start_time = "ACTIVE", _now()
            tasks, groups = self._tasks(job)
            verify = _verify_mode(job.params.get("verify_checksum"))
            existing = "overwrite" if job.params.get("overwrite") else "fail"
        outcomes = self.engine.run(tasks, verify=verify, existing=existing)
        with self._lock:
            for group, outcome in zip(groups, outcomes, strict=True):
                if job.job_type == "H":
                    self._settle_multihop(group, outcome)
                else:
                    self._settle_alternatives(group, outcome)
                if outcome.ok and not outcome.skipped:
                    self.copies += 1
            job.state = _job_state(job.rows)
            job.job_finished = _now()
            failed = [r.reason for r in job.rows if r.state == "FAILED"]
            job.reason = (
                f"One or more files failed. Please have a look at the details for more information: {failed[0]}"
                if failed
                else ""
            )
        log.info("job %s %s", job_id, job.state)

    @staticmethod
    def _tasks(job: _Job) -> tuple[list[CopyTask], list[list[_FileRow]]]:
        if job.job_type == "H":
            rows = job.rows
            hops = tuple(r.dest_surl for r in rows[:-1])
            last = rows[-1]
            task = CopyTask(
                (rows[0].source_surl,), last.dest_surl, _expected_adler32(last.checksum), last.filesize, hops
            )
            return [task], [rows]
        groups: dict[int, list[_FileRow]] = {}
        for row in job.rows:
            groups.setdefault(row.file_index, []).append(row)
        ordered = [groups[i] for i in sorted(groups)]
        tasks = [
            CopyTask(tuple(r.source_surl for r in g), g[0].dest_surl, _expected_adler32(g[0].checksum), g[0].filesize)
            for g in ordered
        ]
        return tasks, ordered

    @staticmethod
    def _settle_alternatives(rows: list[_FileRow], outcome: CopyOutcome) -> None:
        finished = _now()
        for row in rows:
            if outcome.ok and (row.source_surl == outcome.source or (outcome.skipped and row is rows[0])):
                row.state, row.reason, row.transferred = "FINISHED", "", outcome.bytes
            elif row.source_surl in outcome.tried or (not outcome.ok and row is rows[0] and not outcome.tried):
                row.state, row.reason = "FAILED", outcome.reason or "failed"
            else:
                row.state = "NOT_USED"
                continue
            row.start_time = row.start_time or finished
            row.finish_time = finished

    @staticmethod
    def _settle_multihop(rows: list[_FileRow], outcome: CopyOutcome) -> None:
        finished = _now()
        failed_leg = None if outcome.ok else (outcome.failed_leg or 0)
        for leg, row in enumerate(rows):
            if failed_leg is None or leg < failed_leg:
                row.state, row.reason = "FINISHED", ""
                row.transferred = row.filesize or 0
            elif leg == failed_leg:
                row.state, row.reason = "FAILED", outcome.reason or "failed"
            else:
                row.state = "NOT_USED"
                continue
            row.start_time = row.start_time or finished
            row.finish_time = finished


def _job_state(rows: Sequence[_FileRow]) -> str:
    """FTS's job state from its files; a file (one file_index) succeeded if any of its rows finished."""
    by_file: dict[int, set[str]] = {}
    for row in rows:
        by_file.setdefault(row.file_index, set()).add(row.state)
    outcomes = {
        "FINISHED" if "FINISHED" in states else "CANCELED" if states <= {"CANCELED", "NOT_USED"} else "FAILED"
        for states in by_file.values()
    }
    if outcomes == {"FINISHED"}:
        return "FINISHED"
    if outcomes == {"CANCELED"}:
        return "CANCELED"
    if "FINISHED" in outcomes:
        return "FINISHEDDIRTY"
    return "FAILED"


def _handler_for(double: Fts3Double) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "fts3-test-double/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]  # also swallows the leading "//"
            query = parse_qs(url.query)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                if not (method == "GET" and not parts) and not double.authorised(self.headers.get("Authorization")):
                    raise ApiError(HTTPStatus.UNAUTHORIZED, "Invalid or missing bearer token")
                self._reply(HTTPStatus.OK, self._route(method, parts, query, raw))
            except ApiError as exc:
                self._reply(exc.status, {"status": f"{exc.status.value} {exc.status.phrase}", "message": exc.message})

        def _route(self, method: str, parts: list[str], query: dict[str, list[str]], raw: bytes) -> Any:
            if method == "GET" and not parts:
                return {"api": API_VERSION, "schema": API_VERSION, "delegation": API_VERSION, "test_double": True}
            if method == "GET" and parts == ["whoami"]:
                return {
                    "user_dn": double.user_dn,
                    "dn": [double.user_dn],
                    "vos": [double.vo],
                    "vos_id": [],
                    "roles": [],
                    "delegation_id": "",
                    "method": "oauth2",
                    "is_root": False,
                    "base_id": str(JOB_ID_NAMESPACE),
                }
            if parts[:1] != ["jobs"]:
                raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: /{'/'.join(parts)}")
            if method == "POST" and len(parts) == 1:
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    raise ApiError(HTTPStatus.BAD_REQUEST, "body is not JSON") from None
                return {"job_id": double.submit(body)}
            if method == "GET" and len(parts) == 1:
                states = ",".join(query.get("state_in", [])).split(",") if "state_in" in query else None
                return double.list_jobs([s for s in states or [] if s] or None)
            ids = parts[1].split(",")
            if method == "GET" and len(parts) == 2:
                fields = ",".join(query["files"]).split(",") if "files" in query else None
                statuses = [double.job_json(i, [f for f in fields if f] if fields is not None else None) for i in ids]
                return statuses if len(ids) > 1 else statuses[0]
            if method == "GET" and len(parts) == 3 and parts[2] == "files" and len(ids) == 1:
                return double.files_json(ids[0])
            if method == "GET" and len(parts) == 3 and parts[2] == "dm" and len(ids) == 1:
                double.job_json(ids[0])
                return []
            if method == "DELETE" and len(parts) == 2:
                cancelled = [double.cancel(i) for i in ids]
                return cancelled if len(ids) > 1 else cancelled[0]
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: {method} /{'/'.join(parts)}")

        def _reply(self, status: HTTPStatus, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="FTS3-REST test double (not FTS3): serves the fts3 client's API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--vo", default="juno")
    parser.add_argument("--parallel", type=int, default=10)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = os.environ.get(TOKEN_ENV, "")
    raw_spec = json.loads(os.environ.get(STORAGE_ENV) or "{}")
    spec = StorageSpec(**raw_spec) if raw_spec else None
    double = Fts3Double(token=token, storage=spec, host=args.host, port=args.port, vo=args.vo, parallel=args.parallel)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    double.start()
    log.info("FTS3 test double serving %s", double.url)
    while not stopping.is_set():
        time.sleep(0.2)
    double.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
