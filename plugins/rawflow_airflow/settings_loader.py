"""Import an Astro-format ``airflow_settings.yaml`` (connections, variables, pools) into Airflow.

Usage: ``python -m rawflow_airflow.settings_loader airflow_settings.yaml --values state.json [--values secrets.json]``

``${name}`` placeholders are filled from the JSON value files; a placeholder without a value is an error
(naming the placeholder), never an empty string. Existing entries are updated in place, so a re-run is a no-op.
Connection passwords are never printed.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from pathlib import Path
from typing import Any

import yaml


def render(text: str, values: dict[str, Any]) -> str:
    # Comment lines may mention placeholders; only the settings themselves are rendered.
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    template = string.Template(text)
    missing = sorted(
        {m.group("named") or m.group("braced") for m in template.pattern.finditer(text)} - set(values) - {None}
    )
    if missing:
        raise SystemExit(f"settings_loader: no value for placeholder(s): {', '.join(missing)}")
    return template.substitute({k: str(v) for k, v in values.items()})


def load_settings(path: Path, values: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    raw = yaml.safe_load(render(path.read_text(), values)) or {}
    section = raw.get("airflow") or {}
    return {key: list(section.get(key) or []) for key in ("connections", "variables", "pools")}


def apply_settings(settings: dict[str, list[dict[str, Any]]]) -> list[str]:
    from airflow.models import Connection, Pool, Variable
    from airflow.utils.session import create_session

    done: list[str] = []
    with create_session() as session:
        for c in settings["connections"]:
            conn_id = c["conn_id"]
            conn = session.query(Connection).filter(Connection.conn_id == conn_id).one_or_none()
            if conn is None:
                conn = Connection(conn_id=conn_id)
                session.add(conn)
            conn.conn_type = c.get("conn_type")
            conn.description = c.get("conn_description")
            conn.host = c.get("conn_host")
            conn.schema = c.get("conn_schema")
            conn.login = c.get("conn_login")
            conn.set_password(c.get("conn_password"))
            conn.port = int(c["conn_port"]) if c.get("conn_port") not in (None, "") else None
            extra = c.get("conn_extra")
            conn.set_extra(json.dumps(extra) if isinstance(extra, dict) else extra)
            done.append(f"connection {conn_id}")
        for p in settings["pools"]:
            pool = session.query(Pool).filter(Pool.pool == p["pool_name"]).one_or_none()
            if pool is None:
                pool = Pool(pool=p["pool_name"], include_deferred=False)
                session.add(pool)
            pool.slots = int(p["pool_slot"])
            pool.description = p.get("pool_description")
            done.append(f"pool {p['pool_name']}")
    for v in settings["variables"]:
        Variable.set(v["variable_name"], v["variable_value"])
        done.append(f"variable {v['variable_name']}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", type=Path)
    parser.add_argument("--values", type=Path, action="append", default=[], help="JSON file of placeholder values")
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for path in args.values:
        values.update(json.loads(path.read_text()))
    done = apply_settings(load_settings(args.settings, values))
    print(f"settings_loader: imported {len(done)} entries: {', '.join(done)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
