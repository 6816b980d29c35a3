"""The ``rawflow`` command: the local grid and operations.

rawflow grid up [--no-airflow] [--no-condor] [--condor-cpus N] [--postgres private|URL] [--api-port N]
rawflow grid down
rawflow grid status [--json]
rawflow sites [--json]
rawflow block status|close ID [--type RAW]
rawflow block retransfer ID --site SE [--type RAW]   (retry the site's bad replicas through a block DAG run)
rawflow block reconcile ID [--type RAW] [--json]     (register files on the Tier-0 whose announcements were lost)
rawflow block audit ID [--site SE] [--type RAW] [--json] [--no-retransfer]   (dark and lost files at the sites)
rawflow file show LFN
rawflow quarantine list [--reason R] | replay ID [ID ...] [--topic T]
rawflow jobs list [--block D] [--payload P] [--state S] | show KEY | retry KEY [KEY ...]   (keep-up jobs)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rawflow.errors import RawflowError

if TYPE_CHECKING:
    from rawflow.airflow_api import AirflowAPI
    from rawflow.naming import DataType
    from rawflow.quarantine import Quarantine
    from rawflow.sites import SitesConfig


def _print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(c) for c in row))
    # Piped output (logs, CI) gets a wide table instead of wrapped cells.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def cmd_grid(args: argparse.Namespace) -> int:
    from rawflow.grid import stack

    var_dir = Path(args.var).resolve() if args.var else None
    if args.action == "up":
        state = stack.up(
            var_dir,
            airflow=not args.no_airflow,
            postgres=args.postgres,
            api_port=args.api_port,
            condor=not args.no_condor,
            condor_cpus=args.condor_cpus,
        )
        print(f"grid up: {len(state.components)} processes; state in {state.state_file}")
        return 0
    if args.action == "down":
        stopped = stack.down(var_dir)
        print(f"grid down: stopped {len(stopped)} processes")
        return 0
    statuses = stack.status(var_dir)
    if args.json:
        print(json.dumps([asdict(s) for s in statuses], indent=2))
    else:
        _print_table(
            "Rawflow local grid",
            ("component", "pid", "running", "reachable", "endpoint"),
            [
                (s.name, s.pid, "yes" if s.running else "NO", "yes" if s.reachable else "-", s.endpoint)
                for s in statuses
            ],
        )
    return 0 if statuses and all(s.running for s in statuses) else 1


def cmd_sites(args: argparse.Namespace) -> int:
    from rawflow.sites import default_sites_path, load_sites

    cfg = load_sites(args.config or default_sites_path())
    if args.json:
        print(json.dumps(cfg.to_raw(), indent=2))
        return 0
    _print_table(
        f"Sites ({cfg.source}, checksum {cfg.checksum})",
        ("site", "role", "share", "route", "url prefix"),
        [
            (
                s.name,
                s.role + (" tier-0" if s.tier0 else "") + (" archive" if s.archive else ""),
                str(s.share),
                " → ".join(h.name for h in cfg.route_to(s.name)) if s.via else "direct",
                s.url_prefix,
            )
            for s in cfg.sites.values()
        ],
    )
    return 0


def cmd_name(args: argparse.Namespace) -> int:
    from rawflow.naming import RawFileName, RawFilePath

    text: str = args.name
    parsed = RawFilePath.parse(text) if "/" in text else None
    name = parsed.file if parsed else RawFileName.parse(text)
    info: dict[str, Any] = {
        "file": name.name,
        "type": name.data_type.value,
        "daq": name.daq,
        "run": name.run_number,
        "stream_type": name.stream_type,
        "stream_name": name.stream_name,
        "file_tag": name.file_tag,
        "file_time": name.file_time.isoformat(),
        "sequence": name.file_sequence,
    }
    if parsed:
        info.update({"lfn": parsed.lfn, "block": parsed.block_id, "root": parsed.root})
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:12} {value}")
    return 0


def _grid_value(name: str) -> str | None:
    from rawflow.grid.stack import GridState, default_var_dir

    value = GridState.load(default_var_dir()).values.get(name)
    return str(value) if value else None


def _catalogue_url(args: argparse.Namespace) -> str:
    import os

    url = args.catalogue or os.environ.get("RAWFLOW_CATALOGUE_URL") or _grid_value("catalogue_url")
    if not url:
        raise RawflowError("no catalogue: pass --catalogue URL, set RAWFLOW_CATALOGUE_URL or run `rawflow grid up`")
    return url


def _sites(args: argparse.Namespace) -> SitesConfig:
    import os

    from rawflow.sites import default_sites_path, load_sites

    path = args.sites or os.environ.get("RAWFLOW_SITES") or _grid_value("sites_path") or default_sites_path()
    return load_sites(path)


def cmd_block(args: argparse.Namespace) -> int:
    from rawflow import replication
    from rawflow.catalogue import get_catalogue
    from rawflow.naming import DataType, parse_block_id

    parse_block_id(args.block_id)
    data_type = DataType.parse(args.type)
    if args.action == "retransfer":
        return _retransfer(args, data_type)
    if args.action == "reconcile":
        return _reconcile(args, data_type)
    if args.action == "audit":
        return _audit(args, data_type)
    catalogue = get_catalogue(_catalogue_url(args))
    try:
        if args.action == "close":
            closed = catalogue.close_block(data_type, args.block_id)
            print(f"block {data_type.value}-{args.block_id}: {'closed' if closed else 'was already closed'}")
            return 0
        block = catalogue.get_block(data_type, args.block_id)
        if block is None:
            raise RawflowError(f"block {data_type.value}-{args.block_id} is not in the catalogue")
        progress = replication.block_status(catalogue, _sites(args), data_type, args.block_id)
    finally:
        catalogue.close()
    if args.json:
        print(
            json.dumps(
                {
                    "block": block.name,
                    "open": block.is_open,
                    "files": block.files,
                    "bytes": block.bytes,
                    "sites": {name: p.to_dict() for name, p in progress.items()},
                },
                indent=2,
            )
        )
        return 0
    _print_table(
        f"{block.name} ({'open' if block.is_open else 'closed'}): {block.files} files, {block.bytes:,} bytes",
        ("site", "status", "assigned", "processed (%)", "problematic", "pending"),
        [
            (
                name,
                p.status,
                p.assigned,
                f"{p.processed} ({100 * p.processed / p.assigned:.1f})" if p.assigned else "0",
                p.problematic,
                p.pending,
            )
            for name, p in progress.items()
        ],
    )
    for name, p in progress.items():
        for lfn, why in list(p.reasons.items())[:5]:
            print(f"  {name}: {lfn}: {why}")
    return 0


def _airflow_api(args: argparse.Namespace) -> AirflowAPI:
    import os

    from rawflow.airflow_api import AirflowAPI

    url = args.airflow_url or os.environ.get("RAWFLOW_AIRFLOW_URL") or _grid_value("airflow_url")
    user = os.environ.get("RAWFLOW_AIRFLOW_USER") or _grid_value("airflow_user") or "admin"
    password = os.environ.get("RAWFLOW_AIRFLOW_PASSWORD")
    password_file = _grid_value("airflow_password_file")
    if password is None and password_file and Path(password_file).exists():
        password = json.loads(Path(password_file).read_text()).get(user)
    if not url or password is None:
        raise RawflowError(
            "no Airflow API: pass --airflow-url and set RAWFLOW_AIRFLOW_USER/RAWFLOW_AIRFLOW_PASSWORD, "
            "or run `rawflow grid up`"
        )
    return AirflowAPI(url, user, password)


def _retransfer(args: argparse.Namespace, data_type: DataType) -> int:
    """Mark the site's bad replicas of the block for one more attempt, then run the block DAG for that site.

    The replicas go back to REGISTERED (the planner transfers them again; the attempt count is kept, so each
    file gets one more try), with the previous error kept in the reason. The copy itself is done by the
    block DAG, triggered through Airflow's REST API with conf {"sites": [SITE]} for the block's day."""
    from rawflow.catalogue import ReplicaState, get_catalogue
    from rawflow.catalogue.base import utc_now
    from rawflow.naming import block_name, parse_block_id

    if not args.site:
        raise RawflowError("block retransfer needs --site SITE")
    site = _sites(args)[args.site].name
    catalogue = get_catalogue(_catalogue_url(args))
    try:
        if catalogue.get_block(data_type, args.block_id) is None:
            raise RawflowError(f"block {block_name(data_type, args.block_id)} is not in the catalogue")
        states = catalogue.replica_states(block=(data_type, args.block_id), site=site)
        by_error: dict[str | None, list[str]] = {}
        for lfn, at_site in states.items():
            if at_site[site].state is ReplicaState.BAD:
                by_error.setdefault(at_site[site].error, []).append(lfn)
        for error, lfns in by_error.items():
            reason = f"retransfer requested by the operator; last error: {error}" if error else "retransfer requested"
            catalogue.set_replica_state(lfns, site, ReplicaState.REGISTERED, error=reason)
    finally:
        catalogue.close()
    marked = sum(len(lfns) for lfns in by_error.values())
    # A manual run anywhere inside the block's day is that block's run; the time of day keeps it unique.
    day = parse_block_id(args.block_id)
    logical_date = f"{day.isoformat()}T{utc_now():%H:%M:%S.%f}Z"
    dag_id = f"rawflow_block_{data_type.value.lower()}"
    run_id = _airflow_api(args).trigger(dag_id, logical_date=logical_date, conf={"sites": [site]})
    result = {"block": block_name(data_type, args.block_id), "site": site, "marked": marked, "dag_id": dag_id}
    result["run_id"] = run_id
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['block']} at {site}: {marked} bad replicas marked for retry; {dag_id} run {run_id} triggered")
    return 0


def _storage() -> Any:
    """A gfal2 client with the storage token of $RAWFLOW_STORAGE_TOKEN or the local grid's secrets."""
    import os

    from rawflow.grid.stack import GridState, default_var_dir
    from rawflow.storage import get_storage

    state = GridState.load(default_var_dir())
    cert_dir = state.values.get("x509_cert_dir")
    if cert_dir and "X509_CERT_DIR" not in os.environ:
        os.environ["X509_CERT_DIR"] = str(cert_dir)  # gfal2 reads its CA directory from the environment
    token = os.environ.get("RAWFLOW_STORAGE_TOKEN")
    if token is None and state.secrets_file.exists():
        token = json.loads(state.secrets_file.read_text()).get("storage_token")
    return get_storage("gfal2", **({"bearer_token": token} if token else {}))


def _reconcile(args: argparse.Namespace, data_type: DataType) -> int:
    """Register the block's Tier-0 files the catalogue does not know (their announcements were lost)."""
    from rawflow.catalogue import get_catalogue
    from rawflow.notify import LogNotifier
    from rawflow.ops.reconcile import Reconciler, reconcile_blocks, report_dict
    from rawflow.quarantine import Quarantine

    url = _catalogue_url(args)
    quarantine = Quarantine(args.quarantine if getattr(args, "quarantine", None) else url)
    quarantine.create_schema()
    catalogue = get_catalogue(url)
    try:
        reconciler = Reconciler(catalogue, _storage(), _sites(args), quarantine, LogNotifier())
        run = reconcile_blocks(reconciler, [(data_type, args.block_id)])
    finally:
        catalogue.close()
    if run.closed:
        raise RawflowError(f"block {run.closed[0]} is closed: its files can no longer be registered")
    if run.failed:
        raise RawflowError(run.summary())
    report = report_dict(run.reports[0])
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{report['block']}: {report['listed']} listed at the Tier-0, {report['already_registered']} already "
        f"registered, {report['recovered']} recovered, {report['rejected']} rejected, {report['skipped']} skipped"
    )
    for reason, count in sorted(report["rejected_by_reason"].items()):
        print(f"  rejected {reason}: {count} (see `rawflow quarantine list --reason {reason}`)")
    for lfn in report["recovered_lfns"]:
        print(f"  recovered {lfn!r}")
    return 0


def _audit(args: argparse.Namespace, data_type: DataType) -> int:
    """Compare each target site's storage under the block directory with the catalogue: dark files are listed,
    lost replicas are marked bad and (unless --no-retransfer) a block DAG run is triggered for their sites.
    Exit status 1 when anything is inconsistent, so scripts notice."""
    from rawflow.catalogue import get_catalogue
    from rawflow.naming import block_name
    from rawflow.ops.audit import AuditStore, audit_block
    from rawflow.planning import targets

    sites = _sites(args)
    names = [sites[args.site].name] if args.site else [s.name for s in targets(sites)]
    url = _catalogue_url(args)
    catalogue = get_catalogue(url)
    try:
        if catalogue.get_block(data_type, args.block_id) is None:
            raise RawflowError(f"block {block_name(data_type, args.block_id)} is not in the catalogue")
        audits = audit_block(catalogue, _storage(), sites, data_type, args.block_id, names)
    finally:
        catalogue.close()
    store = AuditStore(url)
    try:
        store.save(audits)
    finally:
        store.close()
    lost_sites = [a.site for a in audits if a.marked_bad]
    triggered: str | None = None
    if lost_sites and not args.no_retransfer:
        triggered = _trigger_block_run(args, data_type, lost_sites)
    if args.json:
        print(json.dumps({"audits": [a.to_dict() for a in audits], "retransfer_run_id": triggered}, indent=2))
    else:
        _print_table(
            f"Audit of {block_name(data_type, args.block_id)} at the sites",
            ("site", "listed", "expected", "good", "dark", "lost", "unchecked", "error"),
            [
                (a.site, a.listed, a.expected, a.good, len(a.dark), len(a.lost), a.unchecked, a.error or "")
                for a in audits
            ],
        )
        for audit in audits:
            for lfn in audit.dark[:20]:
                print(f"  {audit.site}: dark {lfn!r} (not deleted)")
            for lfn, why in list(sorted(audit.lost.items()))[:20]:
                print(f"  {audit.site}: {lfn!r}: {why}")
        if triggered:
            print(f"lost replicas at {', '.join(lost_sites)} marked bad; block DAG run {triggered} retransfers them")
    return 0 if all(a.consistent for a in audits) else 1


def _trigger_block_run(args: argparse.Namespace, data_type: DataType, sites: Sequence[str]) -> str:
    """A block DAG run for the block's day, restricted to ``sites`` (the time of day keeps its id unique)."""
    from rawflow.catalogue.base import utc_now
    from rawflow.naming import parse_block_id

    logical_date = f"{parse_block_id(args.block_id).isoformat()}T{utc_now():%H:%M:%S.%f}Z"
    dag_id = f"rawflow_block_{data_type.value.lower()}"
    run_id: str = _airflow_api(args).trigger(dag_id, logical_date=logical_date, conf={"sites": list(sites)})
    return run_id


def cmd_file(args: argparse.Namespace) -> int:
    from rawflow.catalogue import get_catalogue

    catalogue = get_catalogue(_catalogue_url(args))
    try:
        record = catalogue.get_file(args.lfn)
        if record is None:
            raise RawflowError(f"file {args.lfn} is not in the catalogue")
        replicas = catalogue.replica_states([args.lfn]).get(args.lfn, {})
    finally:
        catalogue.close()
    sites = _sites(args)
    replica_rows: dict[str, dict[str, Any]] = {
        site: {
            "state": r.state.value,
            "attempts": r.attempts,
            "error": r.error,
            "updated_at": r.updated_at.isoformat(),
            "url": sites[site].pfn(record.lfn) if site in sites.sites else None,
        }
        for site, r in sorted(replicas.items())
    }
    info: dict[str, Any] = {
        "lfn": record.lfn,
        "size": record.size,
        "adler32": record.adler32,
        "type": record.data_type.value,
        "block": record.block,
        "dataset": record.dataset,
        "run": record.run_number,
        "stream": record.stream,
        "received_at": record.received_at.isoformat(),
        "replicas": replica_rows,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{record.lfn}\n  {record.size:,} bytes, adler32 {record.adler32}, {record.block}, run {record.run_number}")
    _print_table(
        "replicas",
        ("site", "state", "attempts", "last error", "url"),
        [(s, r["state"], r["attempts"], r["error"] or "", r["url"] or "") for s, r in replica_rows.items()],
    )
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from rawflow.quarantine import Quarantine

    url = args.quarantine or _catalogue_url(args)
    if args.action == "replay":
        return _replay(args, Quarantine(url))
    entries = Quarantine(url).list(reason=args.reason, limit=args.limit)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": e.id,
                        "received_at": e.received_at.isoformat(),
                        "topic": e.topic,
                        "partition": e.partition,
                        "offset": e.offset,
                        "reason": e.reason,
                        "reason_text": e.reason_text,
                        "lfn": e.lfn,
                        "payload_size": e.payload_size,
                        "status": e.status.value,
                    }
                    for e in entries
                ],
                indent=2,
            )
        )
        return 0
    _print_table(
        f"quarantine ({len(entries)} shown)",
        ("id", "received", "topic/partition/offset", "reason", "why", "lfn"),
        [
            (
                e.id,
                f"{e.received_at:%Y-%m-%d %H:%M:%S}",
                f"{e.topic}/{e.partition}/{e.offset}",
                e.reason,
                e.reason_text,
                e.lfn or "",
            )
            for e in entries
        ],
    )
    return 0


def _replay(args: argparse.Namespace, quarantine: Quarantine) -> int:
    """Publish quarantined messages again (e.g. after the file was fixed at the Tier-0), and mark them replayed."""
    import os

    from rawflow.kafka import KafkaSettings
    from rawflow.receiver import make_producer

    if not args.ids:
        raise RawflowError("quarantine replay needs at least one message id (see `rawflow quarantine list`)")
    bootstrap = args.bootstrap or os.environ.get("RAWFLOW_KAFKA_BOOTSTRAP") or _grid_value("kafka_bootstrap")
    if not bootstrap:
        raise RawflowError(
            "no Kafka broker: pass --bootstrap HOST:PORT, set RAWFLOW_KAFKA_BOOTSTRAP or run `rawflow grid up`"
        )
    replayed = quarantine.replay(args.ids, make_producer(KafkaSettings(bootstrap=bootstrap)), topic=args.topic)
    if args.json:
        print(json.dumps({"replayed": replayed, "ids": args.ids}))
    else:
        print(f"replayed {replayed} quarantined message(s) to {args.topic or 'their own topics'}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """Keep-up jobs from the jobs table (in the catalogue's database)."""
    from rawflow.processing.jobs import JobStore
    from rawflow.processing.keepup import retry_jobs
    from rawflow.processing.planning import JobPhase

    store = JobStore(args.jobs_db or _catalogue_url(args))
    try:
        if args.action == "retry":
            if not args.keys:
                raise RawflowError(
                    "jobs retry: name at least one job KEY (see `rawflow jobs list --state problematic`)"
                )
            reset = retry_jobs(store, args.keys)
            skipped = sorted(set(args.keys) - set(reset))
            if args.json:
                print(json.dumps({"reset": reset, "not_problematic_or_unknown": skipped}, indent=2))
            else:
                print(f"reset {len(reset)} job(s); the next keep-up round resubmits them")
                for key in skipped:
                    print(f"  not Problematic or unknown, left alone: {key}")
            return 0 if reset or not skipped else 1
        if args.action == "show":
            if len(args.keys) != 1:
                raise RawflowError("jobs show: name exactly one job KEY")
            record = store.get(args.keys).get(args.keys[0])
            if record is None:
                raise RawflowError(f"no job with key {args.keys[0]!r}")
            if args.json:
                print(json.dumps({**record.to_dict(), "summary": record.summary}, indent=2))
                return 0
            for name, value in record.to_dict().items():
                if isinstance(value, list):
                    value = "\n  ".join(["", *value]) if value else "-"
                print(f"{name:>16}: {value if value not in (None, '') else '-'}")
            return 0
        states = [JobPhase(s) for s in args.state] if args.state else None
        records = store.list_jobs(block_id=args.block, payload=args.payload, states=states, limit=args.limit)
        if args.json:
            print(json.dumps([r.to_dict() for r in records], indent=2))
            return 0
        _print_table(
            f"keep-up jobs ({len(records)} shown)",
            ("key", "payload", "block", "run", "state", "attempts", "backend id", "exit", "reason", "updated"),
            [
                (
                    r.key,
                    r.payload,
                    r.block_id,
                    r.run,
                    r.state.value,
                    r.attempts,
                    r.backend_id or "",
                    "" if r.exit_code is None else r.exit_code,
                    (r.reason or r.hold_reason or "")[:80],
                    f"{r.updated_at:%Y-%m-%d %H:%M:%S}",
                )
                for r in records
            ],
        )
        return 0
    finally:
        store.close()


def _add_catalogue_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalogue", help="catalogue URL (default: $RAWFLOW_CATALOGUE_URL or the local grid's)")
    parser.add_argument("--sites", help="sites file (default: $RAWFLOW_SITES or the local grid's)")
    parser.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rawflow", description="Rawflow raw-data management: grid and operations")
    sub = parser.add_subparsers(dest="command", required=True)

    grid = sub.add_parser("grid", help="start, stop or check the local grid")
    grid.add_argument("action", choices=("up", "down", "status"))
    grid.add_argument("--var", help="state directory (default: $RAWFLOW_VAR or ./var)")
    grid.add_argument("--no-airflow", action="store_true", help="start only the middleware")
    grid.add_argument("--no-condor", action="store_true", help="do not start the local HTCondor pool")
    grid.add_argument("--condor-cpus", type=int, default=4, help="slots of the local HTCondor pool (default 4)")
    grid.add_argument("--postgres", help="'private' (start one) or a server URL; default: SQLite")
    grid.add_argument("--api-port", type=int, default=8080, help="Airflow UI/API port if free (default 8080)")
    grid.add_argument("--json", action="store_true")
    grid.set_defaults(func=cmd_grid)

    sites = sub.add_parser("sites", help="show the site policy")
    sites.add_argument("--config", help="sites file (default: $RAWFLOW_SITES or config/sites.yaml)")
    sites.add_argument("--json", action="store_true")
    sites.set_defaults(func=cmd_sites)

    name = sub.add_parser("name", help="parse a raw file name, path or LFN (one-line error if it does not parse)")
    name.add_argument("name")
    name.add_argument("--json", action="store_true")
    name.set_defaults(func=cmd_name)

    block = sub.add_parser("block", help="a block's state per site, or close it")
    block.add_argument("action", choices=("status", "close", "retransfer", "reconcile", "audit"))
    block.add_argument("block_id", help="YYYYMMDD")
    block.add_argument("--type", default="RAW", help="RAW or RTRAW")
    block.add_argument("--site", help="retransfer: the site whose bad replicas are retried; audit: only this site")
    block.add_argument(
        "--no-retransfer", action="store_true", help="audit: mark lost replicas bad but trigger no block DAG run"
    )
    block.add_argument(
        "--airflow-url", help="retransfer: Airflow API URL (default: $RAWFLOW_AIRFLOW_URL or the grid's)"
    )
    _add_catalogue_options(block)
    block.set_defaults(func=cmd_block)

    file = sub.add_parser("file", help="one file's catalogue entry and replicas")
    file.add_argument("action", choices=("show",))
    file.add_argument("lfn")
    _add_catalogue_options(file)
    file.set_defaults(func=cmd_file)

    quarantine = sub.add_parser("quarantine", help="rejected announcements, with their reasons")
    quarantine.add_argument("action", choices=("list", "replay"))
    quarantine.add_argument("ids", nargs="*", type=int, help="replay: quarantined message ids")
    quarantine.add_argument("--topic", help="replay: publish to this topic instead of each message's own")
    quarantine.add_argument(
        "--bootstrap", help="replay: Kafka bootstrap (default: $RAWFLOW_KAFKA_BOOTSTRAP or the grid's)"
    )
    quarantine.add_argument("--reason", help="only this reason code")
    quarantine.add_argument("--limit", type=int, default=100)
    quarantine.add_argument("--quarantine", help="quarantine database URL (default: the catalogue's)")
    _add_catalogue_options(quarantine)
    quarantine.set_defaults(func=cmd_quarantine)

    jobs = sub.add_parser("jobs", help="keep-up processing jobs: list, show one, retry Problematic ones")
    jobs.add_argument("action", choices=("list", "show", "retry"))
    jobs.add_argument("keys", nargs="*", help="show/retry: job keys")
    jobs.add_argument("--block", help="list: only this block (YYYYMMDD)")
    jobs.add_argument("--payload", choices=("raw2rtraw", "rec", "dqm"), help="list: only this payload")
    jobs.add_argument(
        "--state",
        action="append",
        choices=("submitting", "queued", "running", "held", "retry_wait", "done", "problematic"),
        help="list: only these states (repeatable)",
    )
    jobs.add_argument("--limit", type=int, default=200)
    jobs.add_argument("--jobs-db", help="jobs database URL (default: the catalogue's)")
    _add_catalogue_options(jobs)
    jobs.set_defaults(func=cmd_jobs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except RawflowError as exc:
        print(f"rawflow: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
