"""The ``rucio`` catalogue: rawflow's catalogue kept in a Rucio server, through rucio-clients.

Mapping (scope ``juno`` unless configured):

- a site is an RSE of the same name (created on first use);
- a file is a file DID named by its LFN; a block (``RAW-20251101``) is a dataset, open until closed; a dataset
  (``RAW-202511``) is a container holding its blocks;
- file metadata lives in Rucio's JSON metadata plugin (needs Postgres): ``Block``, ``Type``, ``Run``, ``Stream``
  (queried with ``list_dids`` filters) and ``ReceivedAt``;
- a replica is a Rucio replica on the RSE whose Rucio state follows :data:`RUCIO_STATE` (A/U/C/D). Rucio has no
  states for "validated" versus "archived" nor a place for the last error or attempts, so rawflow's own replica
  record ``{"state", "error", "attempts", "updated_at"}`` is kept in the file's JSON metadata under
  ``rawflow_<SITE>``, and is what :meth:`replica_states` reports;
- lineage: a file made from others (RTRAW from RAW, ESD from RTRAW) carries its parents' LFNs in its JSON
  metadata under ``Parents`` (Rucio attaches files only to collections, not to files). Children share their
  parents' receiving day, so the children of a day's files are found among that day's blocks.

Rucio commits each REST call on its own: ``register_files`` is one transaction per chunk of at most 1,000 DIDs
(Rucio's limit), not per call. Every step is idempotent, so a call that failed half-way is safely repeated.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from rucio.client import Client
from rucio.common import exception as rucio_errors

from rawflow.catalogue.base import (
    BlockClosedError,
    BlockRecord,
    FileRecord,
    RegisterResult,
    ReplicaInfo,
    ReplicaState,
    UnknownParentError,
    as_utc,
    check_metadata_keys,
    chunked,
    parse_block_name,
    split_repeats,
    utc_now,
    validate_files,
    validate_lineage,
)
from rawflow.errors import PermanentError, TransientError
from rawflow.naming import DataType, block_name, dataset_name, parse_lfn

DEFAULT_SCOPE = "juno"
MAX_DIDS_PER_CALL = 1000  # Rucio refuses larger bulk requests
MAX_LFN_LENGTH = 250  # Rucio's DID name limit (the naming scheme allows longer file names)
SITE_KEY_PREFIX = "rawflow_"
PARENTS_KEY = "Parents"

RUCIO_STATE: dict[ReplicaState, str] = {
    ReplicaState.REGISTERED: "U",  # UNAVAILABLE: known, not yet checked
    ReplicaState.COPYING: "C",  # COPYING
    ReplicaState.VALIDATED: "A",  # AVAILABLE
    ReplicaState.BAD: "D",  # BAD
    ReplicaState.ARCHIVED: "A",  # AVAILABLE (on a tape RSE)
}

_TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    rucio_errors.ServiceUnavailable,
    rucio_errors.DatabaseException,
    rucio_errors.CannotAuthenticate,
)


@contextlib.contextmanager
def _rucio_errors() -> Iterator[None]:
    try:
        yield
    except _TRANSIENT as exc:
        raise TransientError(f"Rucio unavailable: {type(exc).__name__}: {exc}") from exc
    except rucio_errors.RucioException as exc:
        raise PermanentError(f"Rucio refused: {type(exc).__name__}: {exc}") from exc


class _Client(Client):  # type: ignore[misc]
    """A Rucio client whose token cache is private to one server and account.

    The stock client keeps one token file per account under the temp dir, shared by every server: two local
    servers (parallel test runs) would keep replacing each other's token."""

    def __init__(self, *, token_dir: Path, **kwargs: Any) -> None:
        self._rawflow_token_dir = token_dir
        token_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        super().__init__(**kwargs)

    def _get_auth_tokens(self) -> tuple[str | None, str, str, str]:
        path = str(self._rawflow_token_dir)
        suffix = f"for_account_{self.account}"
        return None, f"{path}/{self.TOKEN_EXP_PREFIX}{suffix}", f"{path}/{self.TOKEN_PREFIX}{suffix}", path


def _default_token_dir(host: str | None, account: str | None) -> Path:
    key = hashlib.sha256(f"{host}|{account}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f".rawflow-rucio-{getpass.getuser()}" / key


class RucioCatalogue:
    """The catalogue in a Rucio server. Options left out come from the Rucio client configuration."""

    max_lfn_length = MAX_LFN_LENGTH

    def __init__(
        self,
        *,
        host: str | None = None,
        account: str | None = None,
        username: str | None = None,
        password: str | None = None,
        auth_type: str | None = None,
        scope: str = DEFAULT_SCOPE,
        token_dir: str | os.PathLike[str] | None = None,
        create: bool = True,
        timeout: int = 600,
    ) -> None:
        self.scope = scope
        creds = {"username": username, "password": password} if username is not None else None
        if creds is not None and auth_type is None:
            auth_type = "userpass"
        with _rucio_errors():
            self._client = _Client(
                token_dir=Path(token_dir) if token_dir else _default_token_dir(host, account),
                rucio_host=host,
                auth_host=host,
                account=account,
                auth_type=auth_type,
                creds=creds,
                timeout=timeout,
            )
        self._known_rses: set[str] = set()
        self._known_blocks: set[str] = set()
        if create:
            self.create_scope()

    def __repr__(self) -> str:
        return f"RucioCatalogue({self._client.host}, scope={self.scope})"

    def close(self) -> None:
        self._client.session.close()

    # -- setup ----------------------------------------------------------------------------------------------

    def create_scope(self) -> None:
        with _rucio_errors():
            if self.scope in self._client.list_scopes():
                return
            with contextlib.suppress(rucio_errors.Duplicate):
                self._client.add_scope(self._client.account, self.scope)

    def _ensure_rse(self, site: str) -> None:
        if site in self._known_rses:
            return
        try:
            self._client.get_rse(site)
        except rucio_errors.RSENotFound:
            with contextlib.suppress(rucio_errors.Duplicate):
                self._client.add_rse(site)
        self._known_rses.add(site)

    def _ensure_block(self, data_type: DataType, block_id: str) -> None:
        name = block_name(data_type, block_id)
        if name in self._known_blocks:
            return
        container = dataset_name(data_type, block_id)
        with contextlib.suppress(rucio_errors.DataIdentifierAlreadyExists):
            self._client.add_container(self.scope, container)
        with contextlib.suppress(rucio_errors.DataIdentifierAlreadyExists):
            self._client.add_dataset(self.scope, name)
        with contextlib.suppress(rucio_errors.DuplicateContent, rucio_errors.FileAlreadyExists):
            self._client.add_datasets_to_container(self.scope, container, [{"scope": self.scope, "name": name}])
        self._known_blocks.add(name)

    # -- helpers --------------------------------------------------------------------------------------------

    def _dids(self, names: Iterable[str]) -> list[dict[str, str]]:
        return [{"scope": self.scope, "name": name} for name in names]

    def _metadata(self, names: Sequence[str], plugin: str = "ALL") -> dict[str, dict[str, Any]]:
        """name → metadata of the DIDs that exist (missing ones are left out)."""
        found: dict[str, dict[str, Any]] = {}
        for chunk in chunked(names, MAX_DIDS_PER_CALL):
            for meta in self._client.get_metadata_bulk(self._dids(chunk), plugin=plugin):
                found[meta["name"]] = meta
        return found

    def _block_files(self, data_type: DataType, block_id: str) -> list[str]:
        try:
            return sorted(f["name"] for f in self._client.list_files(self.scope, block_name(data_type, block_id)))
        except rucio_errors.DataIdentifierNotFound:
            return []

    @staticmethod
    def _site_record(state: ReplicaState, error: str | None, attempts: int, when: datetime) -> dict[str, Any]:
        return {"state": state.value, "error": error, "attempts": attempts, "updated_at": when.isoformat()}

    @staticmethod
    def _replica_info(record: dict[str, Any]) -> ReplicaInfo:
        return ReplicaInfo(
            state=ReplicaState(record["state"]),
            error=record.get("error"),
            updated_at=as_utc(datetime.fromisoformat(record["updated_at"])),
            attempts=int(record.get("attempts", 0)),
        )

    @staticmethod
    def _file_record(meta: dict[str, Any]) -> FileRecord | None:
        if "Block" not in meta or "ReceivedAt" not in meta:
            return None  # a DID rawflow did not register
        return FileRecord(
            lfn=meta["name"],
            size=int(meta["bytes"]),
            adler32=meta["adler32"],
            data_type=DataType(meta["Type"]),
            block_id=meta["Block"],
            run_number=int(meta["Run"]),
            stream=meta["Stream"],
            received_at=as_utc(datetime.fromisoformat(meta["ReceivedAt"])),
        )

    def _block_is_open(self, name: str) -> bool:
        return bool(self._client.get_metadata(self.scope, name)["is_open"])

    # -- registration ---------------------------------------------------------------------------------------

    def register_files(
        self,
        files: Sequence[FileRecord],
        *,
        site: str,
        state: ReplicaState = ReplicaState.VALIDATED,
        parents: Mapping[str, Sequence[str]] | None = None,
    ) -> RegisterResult:
        validate_files(files, self.max_lfn_length)
        links = validate_lineage(files, parents)
        wanted_parents: dict[str, set[str]] = defaultdict(set)
        for parent, child in links:
            wanted_parents[child].add(parent)
        state = ReplicaState(state)
        unique, repeats = split_repeats(files)
        result = RegisterResult(conflicts=list(repeats))
        if not unique:
            return result
        now = utc_now()
        site_key = SITE_KEY_PREFIX + site
        with _rucio_errors():
            known = self._metadata([f.lfn for f in unique])
            self._check_parents(links, known, {f.lfn for f in unique})
            new: list[FileRecord] = []
            without_replica: list[FileRecord] = []
            for record in unique:
                meta = known.get(record.lfn)
                if meta is None:
                    new.append(record)
                elif meta["adler32"] != record.adler32:
                    result.conflicts.append((record.lfn, meta["adler32"], record.adler32))
                else:
                    result.existing.append(record.lfn)
                    if site_key not in meta:
                        without_replica.append(record)
            by_block: dict[tuple[DataType, str], list[FileRecord]] = defaultdict(list)
            for record in new:
                by_block[record.data_type, record.block_id].append(record)
            self._ensure_rse(site)
            for data_type, block_id in sorted(by_block):
                self._ensure_block(data_type, block_id)
                if not self._block_is_open(block_name(data_type, block_id)):
                    raise BlockClosedError(block_name(data_type, block_id))
            site_record = self._site_record(state, None, 1 if state is ReplicaState.COPYING else 0, now)
            for (data_type, block_id), records in sorted(by_block.items()):
                for chunk in chunked(records, MAX_DIDS_PER_CALL):
                    self._add_new_files(
                        block_name(data_type, block_id), chunk, site, state, site_key, site_record, wanted_parents
                    )
                    result.added.extend(f.lfn for f in chunk)
            self._add_replicas(without_replica, site, state, site_key, site_record)
            self._add_parents({lfn: known[lfn] for lfn in result.existing}, wanted_parents)
        return result

    def _check_parents(self, links: Sequence[tuple[str, str]], known: dict[str, Any], offered: set[str]) -> None:
        wanted = sorted({parent for parent, _ in links} - offered)
        if not wanted:
            return
        found = self._metadata([p for p in wanted if p not in known], plugin="JSON")
        for parent, child in links:
            if parent not in offered and parent not in known and parent not in found:
                raise UnknownParentError(child, parent)

    def _add_parents(self, metas: dict[str, dict[str, Any]], wanted: Mapping[str, set[str]]) -> None:
        """Merge lineage into existing files' ``Parents`` (a repeat changes nothing)."""
        updates = []
        for lfn, meta in sorted(metas.items()):
            have = set(meta.get(PARENTS_KEY) or [])
            if lfn in wanted and not wanted[lfn] <= have:
                merged = sorted(have | wanted[lfn])
                updates.append({"scope": self.scope, "name": lfn, "meta": {PARENTS_KEY: merged}})
        for chunk in chunked(updates, MAX_DIDS_PER_CALL):
            self._client.set_dids_metadata_bulk(list(chunk))

    def _add_new_files(
        self,
        block: str,
        records: Sequence[FileRecord],
        site: str,
        state: ReplicaState,
        site_key: str,
        site_record: dict[str, Any],
        parents: Mapping[str, set[str]],
    ) -> None:
        # One call creates the file DIDs with their metadata, their replicas at the RSE and the attachment.
        dids = [
            {
                "scope": self.scope,
                "name": f.lfn,
                "bytes": f.size,
                "adler32": f.adler32,
                "state": RUCIO_STATE[state],
                "meta": {
                    **f.metadata(),
                    "ReceivedAt": f.received_at.isoformat(),
                    site_key: site_record,
                    **({PARENTS_KEY: sorted(parents[f.lfn])} if f.lfn in parents else {}),
                },
            }
            for f in records
        ]
        try:
            self._client.add_files_to_dataset(self.scope, block, dids, rse=site)
        except (rucio_errors.DataIdentifierAlreadyExists, rucio_errors.FileAlreadyExists) as exc:
            raise TransientError(f"files of {block} registered concurrently; register again: {exc}") from exc
        except rucio_errors.FileConsistencyMismatch as exc:
            raise TransientError(f"a file of {block} was registered concurrently with another checksum: {exc}") from exc

    def _add_replicas(
        self,
        records: Sequence[FileRecord],
        site: str,
        state: ReplicaState,
        site_key: str,
        site_record: dict[str, Any],
    ) -> None:
        for chunk in chunked(records, MAX_DIDS_PER_CALL):
            replicas = [
                {"scope": self.scope, "name": f.lfn, "bytes": f.size, "adler32": f.adler32, "state": RUCIO_STATE[state]}
                for f in chunk
            ]
            self._client.add_replicas(site, replicas)
            self._client.set_dids_metadata_bulk(
                [{"scope": self.scope, "name": f.lfn, "meta": {site_key: site_record}} for f in chunk]
            )

    # -- files ----------------------------------------------------------------------------------------------

    def get_file(self, lfn: str) -> FileRecord | None:
        return self.get_files([lfn]).get(lfn)

    def get_files(self, lfns: Iterable[str]) -> dict[str, FileRecord]:
        with _rucio_errors():
            metas = self._metadata(sorted(set(lfns)))
        records = {name: self._file_record(meta) for name, meta in metas.items()}
        return {name: record for name, record in records.items() if record is not None}

    def files_in_block(self, data_type: DataType, block_id: str) -> list[FileRecord]:
        with _rucio_errors():
            names = self._block_files(data_type, block_id)
        found = self.get_files(names)
        return [found[name] for name in names if name in found]

    def query_files(self, **metadata: str | int) -> list[str]:
        check_metadata_keys(metadata)
        filters: dict[str, str | int] = {}
        for key, value in metadata.items():
            if key == "Run":
                filters[key] = int(value)
            elif key == "Type":
                filters[key] = DataType.parse(value).value
            else:
                filters[key] = str(value)
        with _rucio_errors():
            return sorted(self._client.list_dids(self.scope, filters, did_type="file"))

    # -- lineage --------------------------------------------------------------------------------------------

    def parents(self, lfns: Iterable[str]) -> dict[str, list[str]]:
        with _rucio_errors():
            metas = self._metadata(sorted(set(lfns)), plugin="JSON")
        return {name: sorted(meta[PARENTS_KEY]) for name, meta in sorted(metas.items()) if meta.get(PARENTS_KEY)}

    def _children_in_block(self, data_type: DataType, block_id: str) -> dict[str, list[str]]:
        """parent → children among the files of one block (children live in their parents' day)."""
        with _rucio_errors():
            names = self._block_files(data_type, block_id)
            metas = self._metadata(names, plugin="JSON") if names else {}
        found: dict[str, list[str]] = defaultdict(list)
        for child, meta in sorted(metas.items()):
            for parent in meta.get(PARENTS_KEY) or []:
                found[parent].append(child)
        return found

    def children(self, lfns: Iterable[str], data_type: DataType | None = None) -> dict[str, list[str]]:
        wanted = set(lfns)
        days = {parse_lfn(lfn).block_id for lfn in wanted}
        types = [DataType.parse(data_type)] if data_type is not None else list(DataType)
        found: dict[str, list[str]] = {}
        for day in sorted(days):
            for child_type in types:
                for parent, kids in self._children_in_block(child_type, day).items():
                    if parent in wanted:
                        found.setdefault(parent, []).extend(kids)
        return {parent: sorted(kids) for parent, kids in sorted(found.items())}

    def files_without_children(self, data_type: DataType, block_id: str, child_type: DataType) -> list[FileRecord]:
        with_children = self._children_in_block(DataType.parse(child_type), block_id)
        return [f for f in self.files_in_block(DataType.parse(data_type), block_id) if f.lfn not in with_children]

    # -- replicas -------------------------------------------------------------------------------------------

    def set_replica_state(
        self, lfns: Iterable[str], site: str, state: ReplicaState, *, error: str | None = None
    ) -> int:
        state = ReplicaState(state)
        now = utc_now()
        site_key = SITE_KEY_PREFIX + site
        with _rucio_errors():
            metas = self._metadata(sorted(set(lfns)))
            created: list[dict[str, Any]] = []
            moved: list[dict[str, Any]] = []
            updates: list[dict[str, Any]] = []
            for name, meta in sorted(metas.items()):
                old = meta.get(site_key)
                if old is not None and old["state"] == state.value and old.get("error") == error:
                    continue
                attempts = int(old.get("attempts", 0)) if old else 0
                if state is ReplicaState.COPYING and (old is None or old["state"] != state.value):
                    attempts += 1
                replica = {"scope": self.scope, "name": name, "state": RUCIO_STATE[state]}
                if old is None:
                    created.append({**replica, "bytes": meta["bytes"], "adler32": meta["adler32"]})
                elif RUCIO_STATE[ReplicaState(old["state"])] != RUCIO_STATE[state]:
                    moved.append(replica)
                record = self._site_record(state, error, attempts, now)
                updates.append({"scope": self.scope, "name": name, "meta": {site_key: record}})
            if created:
                self._ensure_rse(site)
            for chunk in chunked(created, MAX_DIDS_PER_CALL):
                self._client.add_replicas(site, list(chunk))
            for chunk in chunked(moved, MAX_DIDS_PER_CALL):
                self._client.update_replicas_states(site, list(chunk))
            for chunk in chunked(updates, MAX_DIDS_PER_CALL):
                self._client.set_dids_metadata_bulk(list(chunk))
        return len(updates)

    def replica_states(
        self,
        lfns: Iterable[str] | None = None,
        *,
        block: tuple[DataType, str] | None = None,
        site: str | None = None,
    ) -> dict[str, dict[str, ReplicaInfo]]:
        if (lfns is None) == (block is None):
            raise ValueError("give either lfns or block")
        with _rucio_errors():
            names = sorted(set(lfns)) if lfns is not None else self._block_files(*block)  # type: ignore[misc]
            metas = self._metadata(names, plugin="JSON")
        states: dict[str, dict[str, ReplicaInfo]] = {}
        for name, meta in metas.items():
            for key, record in meta.items():
                if not key.startswith(SITE_KEY_PREFIX) or not isinstance(record, dict):
                    continue
                replica_site = key[len(SITE_KEY_PREFIX) :]
                if site is None or replica_site == site:
                    states.setdefault(name, {})[replica_site] = self._replica_info(record)
        return states

    def block_summary(self, data_type: DataType, block_id: str) -> dict[str, dict[ReplicaState, int]]:
        summary: dict[str, dict[ReplicaState, int]] = {}
        for per_site in self.replica_states(block=(data_type, block_id)).values():
            for site, info in per_site.items():
                counts = summary.setdefault(site, {})
                counts[info.state] = counts.get(info.state, 0) + 1
        return summary

    # -- blocks and datasets --------------------------------------------------------------------------------

    def _block_record(self, meta: dict[str, Any]) -> BlockRecord:
        data_type, block_id = parse_block_name(meta["name"])
        if meta["is_open"]:
            # Rucio totals an open dataset's length and bytes only now and then: count its files instead.
            contents = list(self._client.list_files(self.scope, meta["name"]))
            files, size = len(contents), sum(int(f["bytes"] or 0) for f in contents)
        else:
            files, size = int(meta.get("length") or 0), int(meta.get("bytes") or 0)
        closed_at = meta.get("closed_at")
        return BlockRecord(
            data_type=data_type,
            block_id=block_id,
            is_open=bool(meta["is_open"]),
            files=files,
            bytes=size,
            created_at=as_utc(meta["created_at"]),
            closed_at=as_utc(closed_at) if closed_at is not None else None,
        )

    def get_block(self, data_type: DataType, block_id: str) -> BlockRecord | None:
        with _rucio_errors():
            try:
                meta = self._client.get_metadata(self.scope, block_name(data_type, block_id))
            except rucio_errors.DataIdentifierNotFound:
                return None
            return self._block_record(meta)

    def _collection_names(self, did_type: str, data_type: DataType | None) -> list[str]:
        types = [DataType.parse(data_type)] if data_type is not None else list(DataType)
        names: list[str] = []
        for kind in types:
            names.extend(self._client.list_dids(self.scope, {"name": f"{kind.value}-*"}, did_type=did_type))
        return sorted(names)

    def list_blocks(self, data_type: DataType | None = None, *, is_open: bool | None = None) -> list[BlockRecord]:
        with _rucio_errors():
            names = self._collection_names("dataset", data_type)
            metas = self._metadata(names, plugin="DID_COLUMN")
            chosen = [
                metas[n] for n in names if n in metas and (is_open is None or bool(metas[n]["is_open"]) == is_open)
            ]
            return [self._block_record(meta) for meta in chosen]

    def close_block(self, data_type: DataType, block_id: str) -> bool:
        name = block_name(data_type, block_id)
        with _rucio_errors():
            try:
                if not self._block_is_open(name):
                    return False
            except rucio_errors.DataIdentifierNotFound:
                raise PermanentError(f"no block {name} in the catalogue") from None
            try:
                self._client.close(self.scope, name)
            except rucio_errors.UnsupportedOperation:
                return False  # closed meanwhile by someone else
        return True

    def datasets(self, data_type: DataType | None = None) -> list[str]:
        with _rucio_errors():
            return self._collection_names("container", data_type)

    def blocks_in_dataset(self, dataset: str) -> list[str]:
        with _rucio_errors():
            try:
                return sorted(c["name"] for c in self._client.list_content(self.scope, dataset))
            except rucio_errors.DataIdentifierNotFound:
                return []
