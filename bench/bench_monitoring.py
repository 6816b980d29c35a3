"""bench_monitoring: the shifters' matrix on a month of history, through the real Airflow API server and Chromium.

History in a private Postgres: 30 daily RAW blocks × 14,400 files, each with a replica at 4 sites (1.73 M
replicas, a few bad, the newest block still copying) and the block × site rows the block operator records.
An ``airflow api-server`` (private AIRFLOW_HOME, the plugin loaded, ``rawflow_catalogue`` pointing at that
database) serves the Rawflow view. Printed: the baseline (``SELECT count(*)`` on the same tables), the
matrix query in process, the matrix API over HTTP with an Airflow JWT (median/p95, target < 300 ms), the
other API calls and metrics, and the matrix page rendered in headless Chromium (target < 2 s).

    .venv/bin/python bench/bench_monitoring.py [--days 30] [--files 14400] [--requests 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "include"), str(REPO / "plugins")]

from rawflow.catalogue.sql import SqlCatalogue  # noqa: E402
from rawflow.grid.airflow import AirflowPorts, airflow_bin, airflow_env, ensure_admin_password, migrate_db  # noqa: E402
from rawflow.grid.postgres import create_database, start_postgres, stop_postgres  # noqa: E402
from rawflow.grid.process import start_daemon, stop_group  # noqa: E402
from rawflow.monitoring import MonitoringStore  # noqa: E402

SITES = ("CNAF-STORM", "JINR-EOS", "IN2P3-DCACHE", "IHEP-TAPE")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def timed(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and p95 in milliseconds."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.95 * len(samples)))]


def report(label: str, call: Callable[[], object], repeat: int) -> tuple[float, float]:
    med, p95 = timed(call, repeat)
    print(f"{label:<58} median {med:8.1f} ms   p95 {p95:8.1f} ms   ({repeat} runs)")
    return med, p95


def fill_history(url: str, days: int, per_day: int) -> None:
    """The catalogue and block_site_status of ``days`` blocks, generated inside Postgres."""
    SqlCatalogue(url).close()  # creates the catalogue schema
    store = MonitoringStore(url)
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    params = {"first": first, "last": today, "n": per_day}
    engine = store.engine
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO datasets (name, data_type, created_at) SELECT DISTINCT 'RAW-' || to_char(d, 'YYYYMM'),"
                " 'RAW', now() FROM generate_series(:first, :last, interval '1 day') d"
            ),
            params,
        )
        conn.execute(
            sa.text(
                "INSERT INTO blocks (name, data_type, block_id, dataset, is_open, created_at, closed_at)"
                " SELECT 'RAW-' || to_char(d, 'YYYYMMDD'), 'RAW', to_char(d, 'YYYYMMDD'), 'RAW-' || to_char(d, 'YYYYMM'),"
                " d::date = :last, d, CASE WHEN d::date = :last THEN NULL ELSE d + interval '26 hours' END"
                " FROM generate_series(:first, :last, interval '1 day') d"
            ),
            params,
        )
        conn.execute(
            sa.text(
                "INSERT INTO files (lfn, size, adler32, block, data_type, block_id, run_number, stream, received_at,"
                " registered_at)"
                " SELECT '/juno/raw/' || to_char(d, 'YYYY/MMDD') || '/Daq.000001.Det.Physics.Raw.'"
                " || to_char(d, 'YYYYMMDD') || '000000.' || lpad(n::text, 5, '0') || '.dat',"
                " 1000000 + n * 37 % 100000, lpad(to_hex(n), 8, '0'), 'RAW-' || to_char(d, 'YYYYMMDD'), 'RAW',"
                " to_char(d, 'YYYYMMDD'), 1, 'Physics', d + n * interval '6 seconds', d + n * interval '6 seconds'"
                " FROM generate_series(:first, :last, interval '1 day') d, generate_series(1, :n) n"
            ),
            params,
        )
        # Every file at every site: validated (archived on tape), a few bad after 3 attempts, and the newest
        # block's last hours still copying.
        conn.execute(
            sa.text(
                "INSERT INTO replicas (lfn, site, state, error, attempts, updated_at)"
                " SELECT f.lfn, s.site,"
                " CASE WHEN f.received_at > now() - interval '3 hours' THEN 'copying'"
                "      WHEN (f.size + s.k) % 997 = 0 THEN 'bad'"
                "      WHEN s.site = 'IHEP-TAPE' THEN 'archived' ELSE 'validated' END,"
                " CASE WHEN (f.size + s.k) % 997 = 0 THEN 'adler32 mismatch at the site' END,"
                " CASE WHEN (f.size + s.k) % 997 = 0 THEN 3 ELSE 1 END,"
                " LEAST(now(), f.received_at + (s.k + 1) * interval '7 minutes')"
                " FROM files f, (VALUES ('CNAF-STORM', 0), ('JINR-EOS', 1), ('IN2P3-DCACHE', 2), ('IHEP-TAPE', 3))"
                " AS s(site, k)"
            )
        )
        conn.execute(sa.text("ANALYZE"))
        rows = conn.execute(
            sa.text(
                "SELECT f.block_id, r.site, count(*),"
                " count(*) FILTER (WHERE r.state IN ('validated', 'archived')),"
                " count(*) FILTER (WHERE r.state = 'bad'),"
                " coalesce(sum(f.size) FILTER (WHERE r.state IN ('validated', 'archived')), 0)"
                " FROM replicas r JOIN files f ON f.lfn = r.lfn GROUP BY f.block_id, r.site"
            )
        ).all()
    for block_id, site, assigned, processed, problematic, done in rows:
        store.record(
            "RAW",
            block_id,
            site,
            assigned=assigned,
            processed=processed,
            problematic=problematic,
            bytes_done=int(done),
            last_error="adler32 mismatch at the site" if problematic else None,
        )
    store.close()


def start_api_server(home: Path, db_url: str) -> tuple[int, str, int]:
    """``airflow api-server`` with the Rawflow plugin; returns (pid, base URL, port)."""
    ports = AirflowPorts.pick()
    extra = {
        "AIRFLOW_CONN_RAWFLOW_CATALOGUE": json.dumps(
            {"conn_type": "generic", "extra": {"backend": "sql", "url": db_url}}
        ),
        "AIRFLOW__API__WORKERS": "1",
    }
    env = airflow_env(home=home, repo=REPO, ports=ports, database_url=f"sqlite:///{home / 'airflow.db'}", extra=extra)
    ensure_admin_password(home)
    migrate_db(env, home / "migrate.log")
    url = f"http://127.0.0.1:{ports.api}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2):
                return True
        except OSError:
            return False

    daemon = start_daemon(
        "airflow-api", [airflow_bin(), "api-server"], log=home / "api.log", env=env, ready=ready, timeout=180
    )
    return daemon.pid, url, ports.api


def login(url: str, home: Path) -> str:
    password = json.loads((home / "passwords.json").read_text())["admin"]
    body = json.dumps({"username": "admin", "password": password}).encode()
    request = urllib.request.Request(f"{url}/auth/token", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return str(json.load(resp)["access_token"])


def fetch(url: str, token: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return bytes(resp.read())


def render_page(url: str, token: str, port: int, expected_rows: int, repeat: int) -> tuple[float, float]:
    from playwright.sync_api import sync_playwright

    samples = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            # The cookie the Airflow UI sets after login; the view accepts it like the UI's own pages.
            context.add_cookies([{"name": "_token", "value": token, "domain": "127.0.0.1", "path": "/"}])
            page = context.new_page()
            for _ in range(repeat):
                started = time.perf_counter()
                page.goto(f"{url}/rawflow/?days=30", wait_until="load")
                page.wait_for_function(
                    f"document.querySelectorAll('#matrix tbody tr[data-block]').length === {expected_rows}"
                )
                samples.append((time.perf_counter() - started) * 1000)
            Path(REPO / "test-artifacts").mkdir(exist_ok=True)
            page.screenshot(path=str(REPO / "test-artifacts" / "bench-matrix.png"), full_page=True)
        finally:
            browser.close()
    samples.sort()
    return statistics.median(samples), samples[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--files", type=int, default=14_400)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    os.environ.setdefault("GFAL_PYTHONBIN", "/usr/bin/python3")

    pg = start_postgres()
    api_pid = None
    try:
        url = create_database(pg.url, "rawflow_bench_monitoring")
        started = time.perf_counter()
        fill_history(url, args.days, args.files)
        store = MonitoringStore(url)
        with store.engine.connect() as conn:
            replicas = conn.execute(sa.text("SELECT count(*) FROM replicas")).scalar_one()
            cells = conn.execute(sa.text("SELECT count(*) FROM block_site_status")).scalar_one()
        print(f"history: {args.days} blocks × {len(SITES)} sites × {args.files} files = {replicas:,} replicas,"
              f" {cells} block × site rows, generated in {time.perf_counter() - started:.0f} s")  # fmt: skip

        def count(table: str) -> Callable[[], object]:
            def run() -> object:
                with store.engine.connect() as conn:
                    return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()

            return run

        n = args.requests
        report("baseline    SELECT count(*) FROM block_site_status", count("block_site_status"), n)
        report("baseline    SELECT count(*) FROM replicas", count("replicas"), 5)
        report("in process  MonitoringStore.matrix(30)", lambda: store.matrix(30), n)
        newest = datetime.now(UTC).strftime("%Y%m%d")
        report(
            "in process  drill_down(newest, problems_only)",
            lambda: store.drill_down("RAW", newest, problems_only=True),
            5,
        )
        store.close()

        home = Path(tempfile.mkdtemp(prefix="rawflow-bench-airflow-"))
        api_pid, base, port = start_api_server(home, url)
        token = login(base, home)
        matrix = json.loads(fetch(f"{base}/rawflow/api/matrix?days=30", token))
        assert len(matrix["rows"]) == args.days and len(matrix["sites"]) == len(SITES), matrix["sites"]
        med, p95 = report(
            "HTTP  GET /rawflow/api/matrix?days=30", lambda: fetch(f"{base}/rawflow/api/matrix?days=30", token), n
        )
        print(f"      matrix API p95 {p95:.1f} ms: {'OK' if p95 < 300 else 'OVER'} (target < 300 ms)")
        report(
            "HTTP  GET /api/v2/monitor/health (Airflow baseline)",
            lambda: fetch(f"{base}/api/v2/monitor/health", token),
            n,
        )
        for label, path, repeat in (
            ("GET /rawflow/api/blocks/<newest>?limit=200", f"/rawflow/api/blocks/RAW-{newest}?limit=200", 10),
            (
                "GET /rawflow/api/blocks/<newest>?problems_only",
                f"/rawflow/api/blocks/RAW-{newest}?problems_only=true",
                10,
            ),
            ("GET /rawflow/api/timeseries?hours=24", "/rawflow/api/timeseries?hours=24&bucket_minutes=10", 5),
            ("GET /rawflow/api/timeseries?hours=720", "/rawflow/api/timeseries?hours=720&bucket_minutes=60", 3),
            ("GET /rawflow/metrics (first scrape, then cached)", "/rawflow/metrics", 5),
        ):
            report(f"HTTP  {label}", lambda path=path: fetch(base + path, token), repeat)
        med, worst = render_page(base, token, port, args.days, 5)
        print(f"Chromium  /rawflow/?days=30 rendered ({args.days} rows)  median {med:.0f} ms  max {worst:.0f} ms"
              f"  ({'OK' if worst < 2000 else 'OVER'} < 2 s)")  # fmt: skip
    finally:
        if api_pid is not None:
            stop_group(api_pid)
        stop_postgres(pg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
