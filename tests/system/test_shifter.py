"""The shifter's commands on a real grid whose receiving day is Beijing time (Asia/Shanghai).

Airflow's own CLI exactly as the README gives it, from the project root with only AIRFLOW_HOME set (the generated
airflow.cfg alone must be right); the block timetable's days starting at Beijing midnight; `rawflow block plan`
against the run that follows it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from rawflow.airflow_api import AirflowAPI
from rawflow.catalogue import get_catalogue
from rawflow.catalogue.base import ReplicaState
from rawflow.grid import stack
from rawflow.naming import DataType, receiving_day, receiving_day_bounds
from rawflow.sites import SitesConfig, default_sites_path, load_sites

REPO = Path(__file__).resolve().parents[2]
ZONE = "Asia/Shanghai"
DAG = "rawflow_block_raw"


class ShifterGrid:
    def __init__(self, state: stack.GridState) -> None:
        self.state = state
        values = state.values
        password = json.loads(Path(values["airflow_password_file"]).read_text())[values["airflow_user"]]
        self.api = AirflowAPI(values["airflow_url"], values["airflow_user"], password)
        self.sites: SitesConfig = load_sites(values["sites_path"])
        self.airflow_home = Path(values["airflow_home"])

    def airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`AIRFLOW_HOME=<var>/airflow .venv/bin/airflow ...` from the project root, nothing else configured."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.pop("PYTHONPATH", None)
        env["AIRFLOW_HOME"] = str(self.airflow_home)
        airflow = str(Path(sys.executable).with_name("airflow"))
        return subprocess.run(
            [airflow, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
        )

    def announce(self, day: date, count: int) -> list[tuple[str, int]]:
        from rawflow.announcer import Announcer
        from rawflow.kafka import KafkaSettings
        from rawflow.receiver import make_producer
        from rawflow.storage import get_storage

        storage = get_storage("gfal2", bearer_token=self.state.secrets()["storage_token"])
        producer = make_producer(KafkaSettings(bootstrap=str(self.state.values["kafka_bootstrap"])))
        announcer = Announcer(storage, self.sites.tier0, producer, timezone=self.sites.timezone)
        files = announcer.make_files(count, day=day, sizes=(8 * 1024, 256 * 1024))
        announcer.write(files)
        announcer.announce(files)
        return [(f.lfn, f.size) for f in files]

    def rawflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "RAWFLOW_VAR": str(self.state.var_dir), "COLUMNS": "100"}
        env.pop("RAWFLOW_SITES", None)
        return subprocess.run(
            [sys.executable, "-m", "rawflow.cli", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShifterGrid]:
    var = tmp_path_factory.mktemp("shifter-grid")
    policy = yaml.safe_load(default_sites_path().read_text())
    policy["timezone"] = ZONE
    sites_file = var / "sites-beijing.yaml"
    sites_file.write_text(yaml.safe_dump(policy, sort_keys=False))
    saved = os.environ.get("RAWFLOW_SITES")
    os.environ["RAWFLOW_SITES"] = str(sites_file)
    os.environ.setdefault("GFAL_PYTHONBIN", "/usr/bin/python3")
    try:
        state = stack.up(var, api_port=None, progress=lambda line: print("grid:", line))
    finally:
        if saved is None:
            os.environ.pop("RAWFLOW_SITES", None)
        else:
            os.environ["RAWFLOW_SITES"] = saved
    try:
        os.environ["X509_CERT_DIR"] = str(state.values["x509_cert_dir"])
        yield ShifterGrid(state)
    finally:
        stack.purge(var, keep_state=True, progress=lambda line: print("grid:", line))  # logs kept, site data not


def _until(check: Any, *, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(2)


def test_airflow_cli_from_the_project_root(grid: ShifterGrid) -> None:
    cfg = (grid.airflow_home / "airflow.cfg").read_text()
    assert f"dags_folder = {REPO / 'dags'}" in cfg and "load_examples = False" in cfg
    assert f"receiving_day_timezone = {ZONE}" in cfg

    def listed() -> subprocess.CompletedProcess[str] | None:
        done = grid.airflow("dags", "list")
        assert done.returncode == 0, done.stdout + done.stderr
        return done if "rawflow_block_raw" in done.stdout and "rawflow_alerts" in done.stdout else None

    dags = _until(listed, what="the DAG processor to parse the repository's DAGs")
    for dag_id in ("rawflow_receiver", "rawflow_block_raw", "rawflow_block_rtraw", "rawflow_alerts"):
        assert dag_id in dags.stdout
    assert "example_" not in dags.stdout
    assert "TimetableNotRegistered" not in dags.stdout + dags.stderr

    trigger = grid.airflow("dags", "trigger", "rawflow_alerts", "--output", "json")
    assert trigger.returncode == 0, trigger.stdout + trigger.stderr
    run = _json_output(trigger.stdout)[0]
    assert run["dag_id"] == "rawflow_alerts" and run["dag_run_id"].startswith("manual__")

    runs = grid.airflow("dags", "list-runs", "rawflow_alerts", "--output", "json")
    assert runs.returncode == 0, runs.stdout + runs.stderr
    listed_runs = _json_output(runs.stdout)
    assert run["dag_run_id"] in {r["run_id"] for r in listed_runs}

    # Block days are Beijing days: each starts at 16:00 UTC the day before. A dry run creates nothing.
    today = receiving_day(datetime.now(UTC), ZONE)
    first, last = today - timedelta(days=3), today - timedelta(days=1)
    dry = grid.airflow(
        "backfill", "create", "--dag-id", DAG, "--from-date", str(first), "--to-date", str(last), "--dry-run"
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    logical_dates = [
        datetime.fromisoformat(m)
        for m in re.findall(r"\| (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d) +\|", dry.stdout)
    ]
    # One run per Beijing day, each starting at Beijing midnight (16:00 UTC the day before).
    assert [receiving_day(d, ZONE) for d in logical_dates] == _days(first, last), dry.stdout
    assert all(d.astimezone(UTC).hour == 16 for d in logical_dates), dry.stdout
    assert not [r for r in grid.api.runs(DAG) if r.get("run_type") == "backfill"]


def test_rawflow_sites_shows_the_running_grids_policy(grid: ShifterGrid) -> None:
    done = grid.rawflow("sites", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["source"] == grid.state.values["sites_path"] and shown["timezone"] == ZONE
    assert shown["sites"]["IHEP-EOS"]["url_prefix"].startswith("root://127.0.0.1:")


def test_plan_is_what_the_run_then_moves(grid: ShifterGrid) -> None:
    """`rawflow block plan` before a block run: per site, the files and bytes the run then copies."""
    for dag_id in ("rawflow_receiver", DAG):
        _until(lambda dag_id=dag_id: _unpaused(grid, dag_id), what=f"{dag_id} parsed", timeout=120)
    # A Beijing day already closed (its end + 2 h grace passed), so the run finishes once everything is copied.
    day = receiving_day(datetime.now(UTC), ZONE) - timedelta(days=2)
    block_id = f"{day:%Y%m%d}"
    files = dict(grid.announce(day, 9))
    _until(lambda: _registered(grid, block_id) == len(files), what="the receiver to register the day", timeout=180)

    planned = grid.rawflow("block", "plan", block_id, "--json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["files"] == len(files)
    sites = plan["sites"]
    assert set(sites) == {"CNAF-STORM", "JINR-EOS", "IN2P3-DCACHE", "IHEP-TAPE"}
    assert sites["JINR-EOS"]["after_hop"]["files"] == sites["JINR-EOS"]["files"] > 0  # via CNAF, in the same run
    assert sites["IHEP-TAPE"]["files"] == len(files)

    start, _ = receiving_day_bounds(block_id, ZONE)
    run_id = grid.api.trigger(DAG, logical_date=start.isoformat().replace("+00:00", "Z"))
    assert grid.api.wait_runs(DAG, [run_id], timeout=600)[run_id] == "success"

    catalogue = get_catalogue(str(grid.state.values["catalogue_url"]))
    try:
        replicas = catalogue.replica_states(block=(DataType.RAW, block_id))
    finally:
        catalogue.close()
    for site, figures in sites.items():
        moved = [
            lfn
            for lfn, at in replicas.items()
            if site in at and at[site].state in (ReplicaState.VALIDATED, ReplicaState.ARCHIVED)
        ]
        assert (len(moved), sum(files[lfn] for lfn in moved)) == (figures["files"], figures["bytes"]), site
    again = json.loads(grid.rawflow("block", "plan", block_id, "--json").stdout)
    assert all(s["files"] == 0 and s["done"] == s["assigned"] for s in again["sites"].values()), again


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install -y chromium")
def test_view_states_zone_errors_and_refresh_in_chromium(grid: ShifterGrid) -> None:
    """The drill-down tells "not in share" from "not copied yet" and the tape buffer from tape; an empty block is
    not green; a bad URL gets a page; the header says as of when (with its zone) and the page refreshes itself,
    its numbers changing while a run copies the block."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    for dag_id in ("rawflow_receiver", DAG):
        _until(lambda dag_id=dag_id: _unpaused(grid, dag_id), what=f"{dag_id} parsed", timeout=120)
    day = receiving_day(datetime.now(UTC), ZONE) - timedelta(days=3)
    block_id = f"{day:%Y%m%d}"
    files = dict(grid.announce(day, 6))
    _until(lambda: _registered(grid, block_id) == len(files), what="the receiver to register the day", timeout=180)
    in2p3 = grid.sites["IN2P3-DCACHE"]
    outside = [lfn for lfn in files if not in2p3.keeps(lfn)]
    url = str(grid.state.values["airflow_url"])
    password = json.loads(Path(grid.state.values["airflow_password_file"]).read_text())["admin"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.goto(f"{url}/")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/", timeout=60_000)

            # Registered, nothing copied yet: every destination cell says so, except where the share excludes it.
            page.goto(f"{url}/rawflow/blocks/RAW-{block_id}?refresh=5")
            page.wait_for_selector("#files tbody tr", timeout=30_000)
            as_of = page.inner_text("#as-of")
            assert "UTC" in as_of and ZONE in as_of and "refreshes every 5 s" in as_of
            assert page.locator("#files td.state.notyet").count() >= len(files) * 3
            assert page.locator("#files td.state.none", has_text="not in share").count() == len(outside)
            page.screenshot(path=str(ARTIFACTS / "ui-shifter-not-copied-yet.png"), full_page=True)

            # The Plan view: the dry run of the same block, per site (every file to the archive; JINR after CNAF).
            page.click("#plan-link")
            page.wait_for_selector("#plan tbody tr", timeout=30_000)
            assert page.inner_text("#plan tr[data-site='IHEP-TAPE'] td.files").startswith(str(len(files)))
            assert "after CNAF-STORM" in page.inner_text("#plan tr[data-site='JINR-EOS'] td.files")
            page.screenshot(path=str(ARTIFACTS / "ui-shifter-plan.png"), full_page=True)
            page.goto(f"{url}/rawflow/blocks/RAW-{block_id}?refresh=5")
            page.wait_for_selector("#files tbody tr", timeout=30_000)
            as_of = page.inner_text("#as-of")

            # A run copies the block; the page reloads itself and shows the copies arrive.
            start, _ = receiving_day_bounds(block_id, ZONE)
            run_id = grid.api.trigger(DAG, logical_date=start.isoformat().replace("+00:00", "Z"))
            deadline = time.monotonic() + 300
            while page.locator("#files td.state.notyet").count() > 0:
                assert time.monotonic() < deadline, "the page never showed the copies"
                page.wait_for_timeout(2000)
            assert page.inner_text("#as-of") != as_of  # it reloaded
            assert grid.api.wait_runs(DAG, [run_id], timeout=600)[run_id] == "success"
            page.reload()
            page.wait_for_selector("#files tbody tr", timeout=30_000)
            assert page.locator("#files td.state.archived", has_text="on tape").count() == len(files)

            # One tape replica back in the disk buffer (copied, not yet migrated): not shown as done.
            catalogue = get_catalogue(str(grid.state.values["catalogue_url"]))
            try:
                catalogue.set_replica_state([sorted(files)[0]], "IHEP-TAPE", ReplicaState.VALIDATED)
            finally:
                catalogue.close()
            page.reload()
            page.wait_for_selector("#files tbody tr", timeout=30_000)
            buffered = page.locator("#files td.state.validated.buffer")
            assert buffered.count() == 1 and "on disk buffer" in buffered.inner_text()
            page.screenshot(path=str(ARTIFACTS / "ui-shifter-tape-buffer.png"), full_page=True)

            # Filters: LFN search through the form, then failed-only for one site.
            needle = sorted(files)[2].rsplit("/", 1)[1]
            page.fill("#file-filters input[name=search]", needle)
            page.click("#file-filters button[type=submit]")
            page.wait_for_url("**search=*", timeout=30_000)
            assert page.locator("#files tbody tr").count() == 1 and needle in page.inner_text("#files")
            assert page.inner_text("#file-count").startswith(f"1 of {len(files)} files")
            page.screenshot(path=str(ARTIFACTS / "ui-shifter-search.png"), full_page=True)
            page.goto(f"{url}/rawflow/blocks/RAW-{block_id}?failed_only=true&site=CNAF-STORM")
            assert page.inner_text("#file-count").startswith(f"0 of {len(files)} files")

            # Today's RTRAW block has no file: its cells say "empty", never a green 100 %.
            today = f"RTRAW-{receiving_day(datetime.now(UTC), ZONE):%Y%m%d}"
            page.goto(f"{url}/rawflow/?type=RTRAW")
            row = page.locator(f"#matrix tr[data-block='{today}']")
            row.wait_for(timeout=120_000)
            assert row.locator("td.cell.empty").count() >= 1
            assert row.locator("td.cell.Processed").count() == 0
            page.screenshot(path=str(ARTIFACTS / "ui-shifter-empty-block.png"), full_page=True)

            # Charts: the chosen window (2 h) whatever the data, % from 0 to 100 without errors, no Tier-0 "throughput",
            # sites in the policy's order, times in UTC.
            page.goto(f"{url}/rawflow/charts?hours=2&bucket_minutes=5")
            page.wait_for_selector("#errors .main-svg", timeout=60_000)
            assert int(page.get_attribute("#throughput", "data-points") or 0) > 0
            layout = page.evaluate(
                "() => { const t = document.getElementById('throughput'), e = document.getElementById('errors');"
                " return {range: t.layout.xaxis.range, x: t.layout.xaxis.title.text, names: t.data.map(d => d.name),"
                " eRange: e.layout.yaxis.range, eUnit: e.layout.yaxis.title.text}; }"
            )
            first, last = (datetime.fromisoformat(v) for v in layout["range"])
            assert abs((last - first) - timedelta(hours=2)) < timedelta(minutes=1), layout
            assert layout["x"] == "time (UTC)" and layout["eUnit"] == "%" and layout["eRange"] == [0, 100]
            assert layout["names"] == ["CNAF-STORM", "JINR-EOS", "IN2P3-DCACHE", "IHEP-TAPE"], layout
            assert page.get_attribute("#errors-note", "data-no-errors") == "true"
            assert "No errors in this window" in page.inner_text("#errors-note")
            page.screenshot(path=str(ARTIFACTS / "ui-shifter-charts.png"), full_page=True)

            # A bad parameter in the URL: a page naming it, not FastAPI's JSON.
            page.goto(f"{url}/rawflow/blocks/RAW-2026xx?limit=-3&site=%3Cb%3Ex%3C%2Fb%3E")
            problem = page.locator("#problem")
            problem.wait_for(timeout=30_000)
            text = problem.inner_text()
            assert "limit" in text and "block" in text and "<b>x</b>" in text, text  # escaped: shown as text
            assert page.locator("#problem b").count() == 0
            page.screenshot(path=str(ARTIFACTS / "ui-shifter-bad-parameter.png"), full_page=True)
        finally:
            browser.close()


def _unpaused(grid: ShifterGrid, dag_id: str) -> bool:
    try:
        grid.api.unpause(dag_id)
    except Exception:
        return False
    return True


def _registered(grid: ShifterGrid, block_id: str) -> int:
    catalogue = get_catalogue(str(grid.state.values["catalogue_url"]))
    try:
        block = catalogue.get_block(DataType.RAW, block_id)
        return block.files if block else 0
    finally:
        catalogue.close()


def _json_output(stdout: str) -> Any:
    """The JSON list Airflow's CLI prints with --output json (its log warnings come first on stdout)."""
    return json.loads(next(line for line in reversed(stdout.splitlines()) if line.startswith("[")))


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
