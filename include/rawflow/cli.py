"""The ``rawflow`` command: the local grid and operations.

rawflow grid up [--no-airflow] [--no-condor] [--condor-cpus N] [--postgres private|URL] [--api-port N]
                [--executor local|celery] [--broker redis|rabbitmq|URL] [--workers N]
rawflow grid down
rawflow grid status [--json]
rawflow sites [--json]
rawflow block status|close|plan ID [--type RAW] [--site SE]
rawflow block retransfer ID --site SE [--type RAW]   (retry the site's bad replicas through a block DAG run)
rawflow block reconcile ID [--type RAW] [--json]     (register files on the Tier-0 whose announcements were lost)
rawflow block audit ID [--site SE] [--type RAW] [--json] [--no-retransfer]   (dark and lost files at the sites)
rawflow file show LFN|PATH|FILE-NAME
rawflow quarantine list [--reason R] [--limit N] | replay ID [ID ...] [--topic T]
rawflow jobs list [--block D] [--payload P] [--state S] | show KEY | retry KEY [KEY ...]   (keep-up jobs)

Output: tables fit the terminal (``--wide``: never narrowed); ``--json`` gives JSON, errors included.
Exit codes: 0 success; 1 not found or the operation failed (a block not in the catalogue, a storage or broker
error, a grid process not running); 2 usage (a bad option or argument, an invalid name, a configuration error).
An error is one line on stderr (``rawflow: ...``), or with ``--json`` one JSON object on stdout:
``{"error": "...", "code": N}``. ``RAWFLOW_DEBUG=1`` shows the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rawflow.errors import (
    NotFoundError,
    PermanentError,
    RawflowError,
    StorageError,
    TransientError,
    UsageError,
)

if TYPE_CHECKING:
    from rawflow.airflow_api import AirflowAPI
    from rawflow.naming import DataType
    from rawflow.quarantine import Quarantine
    from rawflow.sites import SitesConfig

EXIT_OK = 0
EXIT_FAILURE = 1  # not found, or the operation failed
EXIT_USAGE = 2  # bad arguments, invalid names, configuration errors

# Set by main() from the parsed options; read by print_table (a subcommand need not pass it along).
OUTPUT: dict[str, Any] = {"wide": False}


# -- shared output helpers (other subcommands use these too) ------------------------------------------------


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code of an error (see the module docstring)."""
    if isinstance(exc, NotFoundError | TransientError | PermanentError | StorageError):
        return EXIT_FAILURE
    if isinstance(exc, RawflowError):
        return EXIT_USAGE
    return EXIT_FAILURE


def one_line(text: object) -> str:
    """An error message on one line (driver errors carry SQL and links on further lines: the first line says it)."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(text).__name__


def report_error(message: str, code: int, *, as_json: bool) -> int:
    """Print one error: a line on stderr, or one JSON object on stdout with ``--json``. Returns ``code``."""
    if as_json:
        print(json.dumps({"error": message, "code": code}))
    else:
        print(f"rawflow: {message}", file=sys.stderr)
    return code


def format_time(value: datetime | None) -> str:
    """A human-readable time that says its zone: ``2026-11-23 08:00:00 UTC`` (naive values are UTC)."""
    if value is None:
        return ""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return f"{aware.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def positive_int(text: str) -> int:
    """argparse type: a whole number above 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive (must be 1 or more)")
    return value


def output_width() -> int | None:
    """Columns the tables may use: the terminal's (or $COLUMNS); None (unlimited) for --wide or piped output."""
    if OUTPUT.get("wide"):
        return None
    if "COLUMNS" in os.environ or sys.stdout.isatty():
        return max(40, shutil.get_terminal_size().columns)
    return None


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    optional: Sequence[str] = (),
) -> list[str]:
    """Print a table that fits the terminal. Returns the columns left out.

    Cells are never cut with "…": a cell longer than its column wraps (every character stays, so an LFN is
    copyable), and when even that does not fit, the ``optional`` columns are left out, in that order, with a
    note naming them (``--wide`` shows everything).
    """
    from rich.console import Console
    from rich.table import Table

    texts = [[str(c) for c in row] for row in rows]
    names = list(columns)

    def needed(index: int) -> int:
        cells = [names[index], *(row[index] for row in texts)]
        return max(len(line) for cell in cells for line in (cell.splitlines() or [""]))

    def table_width(keep: list[int]) -> int:
        return sum(needed(i) + 3 for i in keep) + 1

    keep = list(range(len(names)))
    width = output_width()
    dropped: list[str] = []
    for name in optional:
        if width is None or table_width(keep) <= width:
            break
        if name in names and names.index(name) in keep and len(keep) > 1:
            keep.remove(names.index(name))
            dropped.append(name)
    table = Table(title=title, title_justify="left")
    for i in keep:
        table.add_column(names[i], overflow="fold")
    for row in texts:
        table.add_row(*(row[i] for i in keep))
    console_width = width if width is not None else max(80, table_width(keep), len(title))
    console = Console(width=console_width, soft_wrap=False, highlight=False)
    console.print(table)
    if dropped:
        console.print(f"(left out to fit {width} columns: {', '.join(dropped)}; --wide shows them)")
    return dropped


def _print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Kept for callers of the old name: see :func:`print_table`."""
    print_table(title, columns, rows)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a one-line :class:`UsageError` (JSON with --json), not usage text + exit."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see {self.prog} --help)")


def cmd_grid(args: argparse.Namespace) -> int:
    from rawflow.grid import stack

    var_dir = Path(args.var).resolve() if args.var else None
    if args.action == "up":
        try:
            stack.check_scale_out(args.executor, args.broker, args.workers)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        state = stack.up(
            var_dir,
            airflow=not args.no_airflow,
            postgres=args.postgres,
            api_port=args.api_port,
            condor=not args.no_condor,
            condor_cpus=args.condor_cpus,
            executor=args.executor,
            broker=args.broker,
            workers=args.workers,
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
        print_table(
            "Rawflow local grid",
            ("component", "pid", "running", "reachable", "endpoint"),
            [
                (s.name, s.pid, "yes" if s.running else "NO", "yes" if s.reachable else "-", s.endpoint)
                for s in statuses
            ],
        )
    return EXIT_OK if statuses and all(s.running for s in statuses) else EXIT_FAILURE


def cmd_sites(args: argparse.Namespace) -> int:
    """The site policy in force: --config, else $RAWFLOW_SITES, else the running grid's, else config/sites.yaml."""
    from rawflow.sites import default_sites_path, load_sites

    path = args.config or os.environ.get("RAWFLOW_SITES") or _running_grid_sites_path()
    cfg = load_sites(path or default_sites_path())
    where = "the running grid's policy" if path and path == _running_grid_sites_path() else "policy file"
    if args.json:
        print(json.dumps({"source": cfg.source, **cfg.to_raw()}, indent=2))
        return EXIT_OK
    print_table(
        f"Sites ({where} {cfg.source}; checksum {cfg.checksum}; receiving day in {cfg.timezone})",
        ("site", "role", "gets", "route", "url prefix"),
        [
            (
                s.name,
                s.role + (", tier-0" if s.tier0 else "") + (", archive" if s.archive else ""),
                _site_gets(s),
                " → ".join(h.name for h in cfg.route_to(s.name)) if s.via else "direct",
                s.url_prefix,
            )
            for s in cfg.sites.values()
        ],
        optional=("route",),
    )
    return EXIT_OK


def _site_gets(site: Any) -> str:
    """What a site receives of each block, in words (a tape archive has no share: it takes every file)."""
    if site.archive:
        return "every file (archive)"
    if site.tier0:
        return "source (raw data lands here)"
    if site.share >= 1:
        return "every file (share 1)"
    if site.share > 0:
        return f"share {site.share} (by LFN hash)"
    return "nothing (share 0)"


def _running_grid_sites_path() -> str | None:
    """The local grid's site policy (its loopback URL prefixes) while some grid process runs."""
    from rawflow.grid.process import pid_alive
    from rawflow.grid.stack import GridState, default_var_dir

    state = GridState.load(default_var_dir())
    path = state.values.get("sites_path")
    running = any(pid_alive(int(c["pid"])) for c in state.components.values())
    return str(path) if path and running and Path(str(path)).exists() else None


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
    from rawflow.sites import load_sites, site_policy_path

    return load_sites(site_policy_path(args.sites))


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
    sites = _sites(args)
    only = [sites[args.site].name] if args.site else None  # an unknown site is a one-line error
    if args.action == "close" and only:
        raise UsageError("block close takes no --site: a block closes for every site")
    catalogue = get_catalogue(_catalogue_url(args))
    try:
        if args.action == "plan":
            return _plan(args, catalogue, sites, data_type, only)
        if args.action == "close":
            if catalogue.get_block(data_type, args.block_id) is None:
                raise NotFoundError(f"block {data_type.value}-{args.block_id} is not in the catalogue")
            closed = catalogue.close_block(data_type, args.block_id)
            if args.json:
                print(json.dumps({"block": f"{data_type.value}-{args.block_id}", "closed": True, "was_open": closed}))
            else:
                print(f"block {data_type.value}-{args.block_id}: {'closed' if closed else 'was already closed'}")
            return EXIT_OK
        block = catalogue.get_block(data_type, args.block_id)
        if block is None:
            raise NotFoundError(f"block {data_type.value}-{args.block_id} is not in the catalogue")
        progress = replication.block_status(catalogue, sites, data_type, args.block_id)
    finally:
        catalogue.close()
    if only:
        progress = {name: p for name, p in progress.items() if name in only}
        if not progress:
            raise UsageError(f"site {only[0]} is not a target of blocks (it neither keeps a share nor archives)")
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
        return EXIT_OK
    print_table(
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
    return EXIT_OK


def _plan(
    args: argparse.Namespace, catalogue: Any, sites: SitesConfig, data_type: DataType, only: list[str] | None
) -> int:
    """``block plan``: what a block run started now would transfer, per site. Reads the catalogue only."""
    from datetime import timedelta

    from rawflow.dry_run import plan_now
    from rawflow.planning import RetryPolicy

    retry = RetryPolicy(max_attempts=args.max_attempts, backoff=timedelta(seconds=args.backoff_seconds))
    dry = plan_now(catalogue, sites, data_type, args.block_id, only=only, retry=retry)
    if dry is None:
        raise NotFoundError(f"block {data_type.value}-{args.block_id} is not in the catalogue")
    if args.json:
        print(json.dumps(dry.to_dict(), indent=2))
        return EXIT_OK
    state = "open" if dry.is_open else "closed"
    print_table(
        f"Plan for {dry.block} ({state}, {dry.files} files, {dry.bytes:,} bytes) as of {format_time(dry.as_of)}"
        " — nothing is moved",
        ("site", "route", "done/assigned", "to copy", "bytes", "from", "waiting", "problematic", "rate", "expected"),
        [
            (
                s.site,
                " → ".join(s.route),
                f"{s.done}/{s.assigned}",
                f"{s.files}" + (f" ({s.after_hop_files} after {s.route[-2]})" if s.after_hop_files else ""),
                f"{s.bytes:,}",
                ", ".join(f"{src} {n}" for src, n in s.sources.items()) or "-",
                len(s.waiting),
                len(s.problematic),
                f"{_human_bytes(s.rate.bytes_per_second)}/s" if s.rate else "not measured",
                _human_duration(s.expected_seconds),
            )
            for s in dry.sites
        ],
        optional=("rate", "problematic", "waiting", "route"),
    )
    for s in dry.sites:
        for lfn, why in list(s.waiting.items())[:3]:
            print(f"  {s.site}: waits: {lfn}: {why}")
        for lfn, why in list(s.problematic.items())[:3]:
            print(f"  {s.site}: problematic: {lfn}: {why}")
    return EXIT_OK


def _human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no recent rate)"
    if seconds < 1:
        return "nothing to copy" if seconds == 0 else "< 1 s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else (f"{minutes} min {secs:02d} s" if minutes else f"{secs} s")


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
    from rawflow.naming import block_name

    if not args.site:
        raise RawflowError("block retransfer needs --site SITE")
    sites = _sites(args)
    site = sites[args.site].name
    catalogue = get_catalogue(_catalogue_url(args))
    try:
        if catalogue.get_block(data_type, args.block_id) is None:
            raise NotFoundError(f"block {block_name(data_type, args.block_id)} is not in the catalogue")
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
    # A manual run anywhere inside the block's receiving day (in the policy's zone) is that block's run; the time
    # elapsed since midnight keeps it unique.
    logical_date = block_logical_date(args.block_id, sites.timezone)
    dag_id = f"rawflow_block_{data_type.value.lower()}"
    run_id = _airflow_api(args).trigger(dag_id, logical_date=logical_date, conf={"sites": [site]})
    result = {"block": block_name(data_type, args.block_id), "site": site, "marked": marked, "dag_id": dag_id}
    result["run_id"] = run_id
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['block']} at {site}: {marked} bad replicas marked for retry; {dag_id} run {run_id} triggered")
    return 0


def _resolve_lfn(catalogue: Any, text: str, timezone: str = "UTC") -> str:
    """An LFN from what the shifter has: the LFN, a full path at a site, or the bare file name.

    A bare name does not say its receiving day (the directory it landed in): the receiving day of the file's own
    time stamp in ``timezone`` (where the DAQ files it, see rawflow.naming) is looked up first, then the days
    around it.
    """
    from datetime import timedelta

    from rawflow.naming import RawFileName, RawFilePath, file_receiving_day, lfn_for

    if "/" in text:
        if text.startswith("/juno/"):
            return text
        try:
            return RawFilePath.parse(text).lfn
        except RawflowError:
            return text  # looked up as given; "not in the catalogue" if it is not an LFN
    name = RawFileName.parse(text)
    stamp = file_receiving_day(name, timezone)
    candidates = [lfn_for(name.data_type, stamp + timedelta(days=d), name.name) for d in (0, 1, -1, 2)]
    found = catalogue.get_files(candidates)
    if not found:
        raise NotFoundError(f"file {text} is not in the catalogue (looked for {candidates[0]} and the days around it)")
    return next(lfn for lfn in candidates if lfn in found)


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
        raise UsageError(f"block {run.closed[0]} is closed: its files can no longer be registered")
    if run.failed:
        raise TransientError(run.summary())
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
    names = [sites[args.site].name] if args.site else [s.name for s in targets(sites, data_type=data_type.value)]
    url = _catalogue_url(args)
    catalogue = get_catalogue(url)
    try:
        if catalogue.get_block(data_type, args.block_id) is None:
            raise NotFoundError(f"block {block_name(data_type, args.block_id)} is not in the catalogue")
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
    logical_date = block_logical_date(args.block_id, _sites(args).timezone)
    dag_id = f"rawflow_block_{data_type.value.lower()}"
    run_id: str = _airflow_api(args).trigger(dag_id, logical_date=logical_date, conf={"sites": list(sites)})
    return run_id


def block_logical_date(block_id: str, timezone: str) -> str:
    """A logical date for a manual block DAG run of ``block_id``: inside its receiving day in ``timezone`` (the
    block DAG's run belongs to that day), at the time of day elapsed now, which keeps run ids unique."""
    from datetime import timedelta

    from rawflow.catalogue.base import utc_now
    from rawflow.naming import day_zone, receiving_day_bounds

    start, end = receiving_day_bounds(block_id, timezone)
    now = utc_now()
    offset = now - now.astimezone(day_zone(timezone)).replace(hour=0, minute=0, second=0, microsecond=0)
    return min(start + offset, end - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")


def cmd_file(args: argparse.Namespace) -> int:
    from rawflow.catalogue import get_catalogue

    sites = _sites(args)
    catalogue = get_catalogue(_catalogue_url(args))
    try:
        lfn = _resolve_lfn(catalogue, args.lfn, sites.timezone)
        record = catalogue.get_file(lfn)
        if record is None:
            raise NotFoundError(f"file {args.lfn} is not in the catalogue")
        replicas = catalogue.replica_states([lfn]).get(lfn, {})
    finally:
        catalogue.close()
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
        return EXIT_OK
    print(record.lfn)
    print(
        f"  {record.size:,} bytes, adler32 {record.adler32}, {record.block}, run {record.run_number}, "
        f"received {format_time(record.received_at)}"
    )
    print_table(
        "replicas",
        ("site", "state", "attempts", "updated", "last error", "url"),
        [
            (s, r["state"], r["attempts"], format_time(replicas[s].updated_at), r["error"] or "", r["url"] or "")
            for s, r in replica_rows.items()
        ],
        optional=("url", "updated", "attempts"),
    )
    return EXIT_OK


def cmd_quarantine(args: argparse.Namespace) -> int:
    from rawflow.messages import Reason
    from rawflow.quarantine import Quarantine

    if args.reason is not None and args.reason not in {r.value for r in Reason}:
        known = ", ".join(sorted(r.value for r in Reason))
        raise UsageError(f"unknown quarantine reason {args.reason!r}; known: {known}")
    url = args.quarantine or _catalogue_url(args)
    if args.action == "replay":
        return _replay(args, Quarantine(url))
    if args.ids:
        raise UsageError("quarantine list takes no message ids (they are for replay)")
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
        return EXIT_OK
    print_table(
        f"quarantine ({len(entries)} shown{', at most ' + str(args.limit) if len(entries) >= args.limit else ''})",
        ("id", "received", "topic/partition/offset", "reason", "lfn", "why"),
        [
            (
                e.id,
                format_time(e.received_at),
                f"{e.topic}/{e.partition}/{e.offset}",
                e.reason,
                e.lfn or "",
                e.reason_text,
            )
            for e in entries
        ],
        optional=("topic/partition/offset", "received"),
    )
    return EXIT_OK


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


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help='JSON on stdout (errors too: {"error", "code"})')
    parser.add_argument("--wide", action="store_true", help="do not fit tables to the terminal width")


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


def cmd_campaign_check(args: argparse.Namespace) -> int:
    """``rawflow campaign check FILE...``: one line per file, ok or its mistake; exit 2 if any is wrong."""
    from rawflow.processing.campaigns import CampaignError, load_campaign

    known_sites = list(_sites(args).sites)
    failed = 0
    for path in args.files:
        try:
            campaign = load_campaign(path, known_sites=known_sites)
        except CampaignError as exc:
            print(f"rawflow: {exc}", file=sys.stderr)
            failed += 1
            continue
        steps = " → ".join(s.payload for s in campaign.steps)
        print(f"{path}: ok: {campaign.kind} {campaign.name!r} ({steps}, {campaign.backend}, {campaign.dag_id})")
    return 2 if failed else 0


def _campaigns_folder(args: argparse.Namespace) -> str:
    import os

    return str(args.folder or os.environ.get("RAWFLOW_CAMPAIGNS_DIR") or Path.cwd() / "config" / "campaigns")


def cmd_campaign_status(args: argparse.Namespace) -> int:
    """``rawflow campaign list`` (the ProdSys table) and ``rawflow campaign status NAME`` (one campaign)."""
    from rawflow.catalogue import get_catalogue
    from rawflow.processing.campaign_round import campaign_output_files, campaigns_overview
    from rawflow.processing.campaigns import load_campaign
    from rawflow.processing.jobs import JobStore

    folder = _campaigns_folder(args)
    store = JobStore(args.jobs_db or _catalogue_url(args))
    catalogue = get_catalogue(_catalogue_url(args))
    try:
        rows = campaigns_overview(folder, store, catalogue)
        if getattr(args, "user", None):  # analyses are kept as <user>.<name>.yaml
            rows = [r for r in rows if str(r.get("file", "")).startswith(f"{args.user}.")]
        if args.campaign_action == "status":
            rows = [r for r in rows if r["name"] in args.names]
            missing = set(args.names) - {r["name"] for r in rows}
            if missing:
                raise RawflowError(f"no campaign named {', '.join(sorted(missing))!r} in {folder}")
            for r in rows:  # the drill-down: every output and its state at each destination
                if r["status"] != "Invalid":
                    r["output_files"] = campaign_output_files(load_campaign(Path(folder) / r["file"]), store, catalogue)
    finally:
        store.close()
        catalogue.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = []
    for r in rows:
        jobs = " ".join(f"{k}={v}" for k, v in sorted((r.get("jobs") or {}).items()))
        table.append(
            [
                r["id"],
                r["status"],
                r.get("kind", ""),
                r["name"],
                r.get("files", ""),
                f"{r['processed_pct']}%" if "processed_pct" in r else "",
                jobs,
                len(r.get("failures") or []),
            ]
        )
    _print_table("campaigns", ["ID", "Status", "Type", "Name", "Files", "Processed", "Jobs", "Failures"], table)
    for r in rows:
        if r.get("error"):
            print(f"  {r['file']}: {r['error']}")
        if r.get("area"):
            print(f"  {r['name']}: {r.get('user')}'s outputs under {r['area']}/")
        if args.campaign_action == "status":
            for failure in r.get("failures") or []:
                print(f"  {failure['key']}: {failure['reason']!r}")
            for output in r.get("output_files") or []:
                states = " ".join(f"{site}={state}" for site, state in sorted(output["replicas"].items()))
                print(f"  {output['lfn']}  {states}")
    return 0


def _analyses_folder() -> Path:
    import os

    from rawflow.grid.stack import default_var_dir

    configured = os.environ.get("RAWFLOW_ANALYSES_DIR")
    return Path(configured) if configured else Path(default_var_dir()) / "analyses"


def cmd_submit(args: argparse.Namespace) -> int:
    """``rawflow submit analysis.yaml``: validate, keep a copy in the analyses folder, trigger rawflow_analysis."""
    import shutil

    from rawflow.processing.campaigns import CampaignError, load_campaign

    analysis = load_campaign(args.file)
    if analysis.kind != "analysis":
        raise CampaignError(args.file, "kind", analysis.kind, "rawflow submit takes kind: analysis")
    folder = _analyses_folder()
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / f"{analysis.user}.{analysis.name}.yaml"
    text = Path(args.file).read_text()
    if kept.exists() and kept.read_text() != text:
        raise CampaignError(
            args.file, "name", analysis.name, f"already submitted with other content ({kept}): rename it"
        )
    if not kept.exists():
        tmp = kept.with_suffix(".tmp")
        shutil.copyfile(args.file, tmp)
        tmp.replace(kept)
    conn = "rawflow_compute" if analysis.backend == "htcondor" else "rawflow_compute_dirac"
    run_id = _airflow_api(args).trigger(
        "rawflow_analysis", logical_date=None, conf={"steering_path": str(kept), "compute_conn_id": conn}
    )
    print(f"submitted {analysis.name!r} for {analysis.user}: rawflow_analysis run {run_id} ({kept})")
    return 0


def cmd_analysis(args: argparse.Namespace) -> int:
    """``rawflow analysis list|status NAME``: the submitted analyses' table (the campaigns view of the folder)."""
    args.folder = str(_analyses_folder())
    args.campaign_action = args.analysis_action
    return cmd_campaign_status(args)


def _add_campaign_parser(sub: Any) -> None:
    submit = sub.add_parser("submit", help="submit a user analysis steering file (kind: analysis)")
    submit.add_argument("file")
    submit.add_argument("--airflow-url", help="Airflow API URL (default: $RAWFLOW_AIRFLOW_URL or the grid's)")
    submit.set_defaults(func=cmd_submit)
    analysis = sub.add_parser("analysis", help="submitted user analyses: list, status")
    analysis_actions = analysis.add_subparsers(dest="analysis_action", required=True)
    for action in ("list", "status"):
        view = analysis_actions.add_parser(action)
        if action == "status":
            view.add_argument("names", nargs="+")
        view.add_argument("--user", help="only this user's analyses")
        view.add_argument("--jobs-db", help="jobs database URL (default: the catalogue's)")
        _add_catalogue_options(view)
        view.set_defaults(func=cmd_analysis)

    campaign = sub.add_parser("campaign", help="production campaigns and analyses from steering files")
    actions = campaign.add_subparsers(dest="campaign_action", required=True)
    check = actions.add_parser("check", help="validate steering files (one line per mistake)")
    check.add_argument("files", nargs="+")
    check.add_argument("--sites", help="sites file to check site names against (default: $RAWFLOW_SITES or the grid's)")
    check.set_defaults(func=cmd_campaign_check)
    for action, help_text in (("list", "the ProdSys table of every campaign"), ("status", "campaigns by name")):
        view = actions.add_parser(action, help=help_text)
        if action == "status":
            view.add_argument("names", nargs="+")
        view.add_argument("--folder", help="campaigns folder (default: $RAWFLOW_CAMPAIGNS_DIR or config/campaigns)")
        view.add_argument("--jobs-db", help="jobs database URL (default: the catalogue's)")
        _add_catalogue_options(view)
        view.set_defaults(func=cmd_campaign_status)


def _add_catalogue_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalogue", help="catalogue URL (default: $RAWFLOW_CATALOGUE_URL or the local grid's)")
    parser.add_argument("--sites", help="sites file (default: $RAWFLOW_SITES or the local grid's)")
    _add_output_options(parser)


EXIT_CODES_HELP = "exit codes: 0 ok; 1 not found or failed; 2 usage or configuration error"

BLOCK_HELP = (
    """actions:
  status ID      files, bytes and per-site progress (assigned / processed / problematic / pending) of a block
  close ID       close the block: no more files are registered into it; runs finish once every site is done
  plan ID        dry run: what a block run started now would copy to each site (files, bytes, sources, routes,
                 expected duration at the recently measured rate), from the same planner; moves nothing
  retransfer ID  mark the --site's bad replicas of the block for one more attempt and trigger a block DAG run
                 for that site (through Airflow, never around it)
  reconcile ID   register the block's files on the Tier-0 whose announcements were lost
  audit ID       compare each target site's storage with the catalogue: dark files listed, lost replicas
                 marked bad and retransferred by a block DAG run (unless --no-retransfer); exit 1 if any

ID is the receiving day YYYYMMDD (a calendar day in the time zone of config/sites.yaml).
"""
    + EXIT_CODES_HELP
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rawflow",
        description="Rawflow raw-data management: grid and operations",
        epilog=EXIT_CODES_HELP,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    raw = argparse.RawDescriptionHelpFormatter

    grid = sub.add_parser(
        "grid",
        help="start, stop or check the local grid",
        formatter_class=raw,
        epilog="actions:\n  up      start every part not running\n  down    stop every recorded process\n"
        "  status  each process: pid, running, answering, endpoint (exit 1 if one is not running)\n\n"
        + EXIT_CODES_HELP,
    )
    grid.add_argument("action", choices=("up", "down", "status"))
    grid.add_argument("--var", help="state directory (default: $RAWFLOW_VAR or ./var)")
    grid.add_argument("--no-airflow", action="store_true", help="start only the middleware")
    grid.add_argument("--no-condor", action="store_true", help="do not start the local HTCondor pool")
    grid.add_argument("--condor-cpus", type=int, default=4, help="slots of the local HTCondor pool (default 4)")
    grid.add_argument("--postgres", help="'private' (start one) or a server URL; default: SQLite")
    grid.add_argument("--api-port", type=int, default=8080, help="Airflow UI/API port if free (default 8080)")
    grid.add_argument(
        "--executor",
        choices=("local", "celery"),
        default="local",
        help="local: airflow standalone; celery: scheduler, DAG processor, triggerer, API server and Celery "
        "workers as separate processes, on Postgres (private unless --postgres URL)",
    )
    grid.add_argument(
        "--broker",
        default="redis",
        help="Celery broker: 'redis' or 'rabbitmq' (a private one, started and stopped with the grid) or a "
        "redis:// or amqp:// URL",
    )
    grid.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    _add_output_options(grid)
    grid.set_defaults(func=cmd_grid)

    sites = sub.add_parser(
        "sites", help="show the site policy (the running grid's, if one runs)", epilog=EXIT_CODES_HELP
    )
    sites.add_argument("--config", help="sites file (default: $RAWFLOW_SITES, the running grid's, config/sites.yaml)")
    _add_output_options(sites)
    sites.set_defaults(func=cmd_sites)

    name = sub.add_parser("name", help="parse a raw file name, path or LFN (one-line error if it does not parse)")
    name.add_argument("name")
    _add_output_options(name)
    name.set_defaults(func=cmd_name)

    block = sub.add_parser(
        "block",
        help="a block: status, close, plan (dry run), retransfer, reconcile, audit",
        description="One block (receiving day) of one data type.",
        formatter_class=raw,
        epilog=BLOCK_HELP,
    )
    block.add_argument(
        "action",
        choices=("status", "close", "plan", "retransfer", "reconcile", "audit"),
        help="see actions below",
    )
    block.add_argument("block_id", help="YYYYMMDD")
    block.add_argument("--type", default="RAW", help="RAW, RTRAW or ESD")
    block.add_argument(
        "--no-retransfer", action="store_true", help="audit: mark lost replicas bad but trigger no block DAG run"
    )
    block.add_argument(
        "--site",
        help="status, plan, audit: only this site; retransfer: the site whose bad replicas are retried",
    )
    block.add_argument(
        "--airflow-url", help="retransfer: Airflow API URL (default: $RAWFLOW_AIRFLOW_URL or the grid's)"
    )
    block.add_argument(
        "--max-attempts", type=positive_int, default=3, help="plan: the block DAG's rawflow_max_attempts (3)"
    )
    block.add_argument(
        "--backoff-seconds",
        type=positive_int,
        default=60,
        help="plan: the block DAG's rawflow_retransfer_backoff_seconds (60)",
    )
    _add_catalogue_options(block)
    block.set_defaults(func=cmd_block)

    file = sub.add_parser(
        "file",
        help="one file's catalogue entry and replicas",
        formatter_class=raw,
        epilog="actions:\n  show FILE  FILE is the LFN, a path at a site or the bare file name\n\n" + EXIT_CODES_HELP,
    )
    file.add_argument("action", choices=("show",))
    file.add_argument("lfn", metavar="FILE", help="LFN (/juno/raw/YYYY/mmdd/NAME), path, or file name")
    _add_catalogue_options(file)
    file.set_defaults(func=cmd_file)

    quarantine = sub.add_parser(
        "quarantine",
        help="rejected announcements, with their reasons",
        formatter_class=raw,
        epilog="actions:\n  list           quarantined messages, oldest first (--reason, --limit)\n"
        "  replay ID ...  publish them again (e.g. after the file was fixed at the Tier-0)\n\n" + EXIT_CODES_HELP,
    )
    quarantine.add_argument("action", choices=("list", "replay"))
    quarantine.add_argument("ids", nargs="*", type=int, help="replay: quarantined message ids")
    quarantine.add_argument("--topic", help="replay: publish to this topic instead of each message's own")
    quarantine.add_argument(
        "--bootstrap", help="replay: Kafka bootstrap (default: $RAWFLOW_KAFKA_BOOTSTRAP or the grid's)"
    )
    quarantine.add_argument("--reason", help="only this reason code (see the reasons in `rawflow quarantine list`)")
    quarantine.add_argument("--limit", type=positive_int, default=100, help="at most this many (default 100)")
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
    _add_campaign_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
        OUTPUT["wide"] = bool(getattr(args, "wide", False))
        code: int = args.func(args)
    except RawflowError as exc:
        return report_error(one_line(exc), exit_code_for(exc), as_json=as_json)
    except KeyboardInterrupt:
        return report_error("interrupted", EXIT_FAILURE, as_json=as_json)
    except Exception as exc:
        # A driver or network error nobody typed: still one line; RAWFLOW_DEBUG=1 shows where it came from.
        if os.environ.get("RAWFLOW_DEBUG"):
            raise
        return report_error(f"{type(exc).__name__}: {one_line(exc)}", EXIT_FAILURE, as_json=as_json)
    return code


if __name__ == "__main__":
    sys.exit(main())
