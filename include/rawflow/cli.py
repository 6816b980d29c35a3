"""The ``rawflow`` command: the local grid and operations.

rawflow grid up [--no-airflow] [--postgres private|URL] [--api-port N]
rawflow grid down
rawflow grid status [--json]
rawflow sites [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rawflow.errors import RawflowError


def _print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(c) for c in row))
    Console().print(table)


def cmd_grid(args: argparse.Namespace) -> int:
    from rawflow.grid import stack

    var_dir = Path(args.var).resolve() if args.var else None
    if args.action == "up":
        state = stack.up(var_dir, airflow=not args.no_airflow, postgres=args.postgres, api_port=args.api_port)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rawflow", description="Rawflow raw-data management: grid and operations")
    sub = parser.add_subparsers(dest="command", required=True)

    grid = sub.add_parser("grid", help="start, stop or check the local grid")
    grid.add_argument("action", choices=("up", "down", "status"))
    grid.add_argument("--var", help="state directory (default: $RAWFLOW_VAR or ./var)")
    grid.add_argument("--no-airflow", action="store_true", help="start only the middleware")
    grid.add_argument("--postgres", help="'private' (start one) or a server URL; default: SQLite")
    grid.add_argument("--api-port", type=int, default=8080, help="Airflow UI/API port if free (default 8080)")
    grid.add_argument("--json", action="store_true")
    grid.set_defaults(func=cmd_grid)

    sites = sub.add_parser("sites", help="show the site policy")
    sites.add_argument("--config", help="sites file (default: $RAWFLOW_SITES or config/sites.yaml)")
    sites.add_argument("--json", action="store_true")
    sites.set_defaults(func=cmd_sites)
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
