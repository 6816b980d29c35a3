"""The Rawflow view in the real Airflow UI, driven by headless Chromium, on the local grid after a real run.

The grid (`rawflow.grid.stack.up`: xrootd sites, Tansu, SMTP sink, `airflow standalone` with the plugin)
replicates a few announced files through the block DAG; the block × site progress is recorded with
``record_progress`` exactly as the block operator records each round. Then: the browser logs in through
Airflow's login form, opens the Rawflow entry of the navigation and finds the matrix filled; the API and
pages refuse requests without a valid Airflow token (401) or with a user who may not read DAGs (403); the
alerts DAG mails a Problematic block × site once; `rawflow block retransfer` retries a site through a DAG run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rawflow import replication
from rawflow.airflow_api import AirflowAPI
from rawflow.catalogue import get_catalogue
from rawflow.catalogue.base import ReplicaState
from rawflow.grid import stack
from rawflow.monitoring import MonitoringStore, record_progress
from rawflow.naming import DataType, block_id_for
from rawflow.sites import SitesConfig, load_sites

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAG = "rawflow_block_raw"
FILES = 6

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install -y chromium")


class UiGrid:
    def __init__(self, state: stack.GridState) -> None:
        self.state = state
        values = state.values
        self.url = str(values["airflow_url"])
        self.password = json.loads(Path(values["airflow_password_file"]).read_text())["admin"]
        self.api = AirflowAPI(self.url, "admin", self.password)
        self.sites: SitesConfig = load_sites(values["sites_path"])
        self.db_url = str(values["catalogue_url"])
        self.day = datetime.now(UTC).date() - timedelta(days=2)
        self.block_id = block_id_for(self.day)

    def announce(self, day: date, count: int) -> list[str]:
        from rawflow.announcer import Announcer
        from rawflow.kafka import KafkaSettings
        from rawflow.receiver import make_producer
        from rawflow.storage import get_storage

        storage = get_storage("gfal2", bearer_token=self.state.secrets()["storage_token"])
        producer = make_producer(KafkaSettings(bootstrap=str(self.state.values["kafka_bootstrap"])))
        announcer = Announcer(storage, self.sites.tier0, producer, timezone=self.sites.timezone)
        files = announcer.make_files(count, day=day, sizes=(8 * 1024, 64 * 1024))
        announcer.write(files)
        announcer.announce(files)
        return [f.lfn for f in files]

    def wait_registered(self, day: date, expected: int, timeout: float = 180) -> None:
        catalogue = get_catalogue(self.db_url)
        deadline = time.monotonic() + timeout
        try:
            while (block := catalogue.get_block(DataType.RAW, block_id_for(day))) is None or block.files < expected:
                assert time.monotonic() < deadline, f"only {block.files if block else 0}/{expected} registered"
                time.sleep(1)
        finally:
            catalogue.close()

    def record_rounds(self, block_id: str) -> dict[str, replication.SiteProgress]:
        """What the block operator records after each round: the block's progress at every target site."""
        catalogue = get_catalogue(self.db_url)
        try:
            progress = replication.block_status(catalogue, self.sites, DataType.RAW, block_id)
            held = catalogue.replica_states(block=(DataType.RAW, block_id))
            sizes = {f.lfn: f.size for f in catalogue.files_in_block(DataType.RAW, block_id)}
        finally:
            catalogue.close()
        for site, p in progress.items():
            good = (ReplicaState.VALIDATED, ReplicaState.ARCHIVED)
            done = sum(sizes[lfn] for lfn, at in held.items() if site in at and at[site].state in good)
            record_progress(self.db_url, "RAW", block_id, site, p, done)
        return progress

    def get(self, path: str, token: str | None = None, accept: str = "application/json") -> tuple[int, str]:
        request = urllib.request.Request(f"{self.url}{path}", headers={"Accept": accept})
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def token(self) -> str:
        body = json.dumps({"username": "admin", "password": self.password}).encode()
        request = urllib.request.Request(
            f"{self.url}/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            return str(json.load(resp)["access_token"])

    def token_without_role(self) -> str:
        """A genuine JWT of this Airflow (its own signer and secret) for a user with no role."""
        code = (
            "from airflow.api_fastapi.app import create_auth_manager\n"
            "from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser\n"
            "print('TOKEN=' + create_auth_manager().generate_jwt(SimpleAuthManagerUser(username='guest', role=None)))\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env["AIRFLOW_HOME"] = str(self.state.var_dir / "airflow")
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        lines = [line for line in done.stdout.splitlines() if line.startswith("TOKEN=")]
        assert lines, done.stdout + done.stderr
        return lines[-1].removeprefix("TOKEN=")


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiGrid]:
    var = tmp_path_factory.mktemp("ui-grid")
    os.environ.setdefault("GFAL_PYTHONBIN", "/usr/bin/python3")
    state = stack.up(var, api_port=None, progress=lambda line: print("grid:", line))
    try:
        os.environ["X509_CERT_DIR"] = str(state.values["x509_cert_dir"])
        g = UiGrid(state)
        for dag_id in ("rawflow_receiver", DAG):
            _retry(lambda dag_id=dag_id: g.api.unpause(dag_id), what=f"{dag_id} parsed")
        g.announce(g.day, FILES)
        g.wait_registered(g.day, FILES)
        run_id = g.api.trigger(DAG, logical_date=f"{g.day}T00:00:00Z")
        assert g.api.wait_runs(DAG, [run_id], timeout=600)[run_id] == "success"
        progress = g.record_rounds(g.block_id)
        assert all(p.pending == 0 and p.problematic == 0 for p in progress.values()), progress
        yield g
    finally:
        stack.purge(var, keep_state=True, progress=lambda line: print("grid:", line))  # logs kept, site data not


def _retry(call: Any, *, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_browser_logs_in_and_finds_the_matrix_of_the_real_run(grid: UiGrid) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    block = f"RAW-{grid.block_id}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{grid.url}/")
            page.fill("input[name=username]", "admin")  # Airflow's own login form (simple auth manager)
            page.fill("input[name=password]", grid.password)
            page.click("button[type=submit]")
            page.wait_for_url(f"{grid.url}/", timeout=60_000)

            # The navigation entry the plugin registered opens the view inside the Airflow UI.
            page.locator("a[href='/plugin/rawflow']").first.click()
            page.wait_for_url("**/plugin/rawflow", timeout=30_000)
            frame = page.frame_locator("iframe")
            row = frame.locator(f"#matrix tr[data-block='{block}']")
            row.wait_for(timeout=30_000)
            for site in [s.name for s in grid.sites.destinations] + [grid.sites.archive.name]:
                cell = row.locator(f"td[data-site='{site}']")
                assert "Processed" in (cell.get_attribute("class") or ""), site
                assert "100.0 %" in cell.inner_text()
            page.screenshot(path=str(ARTIFACTS / "ui-matrix.png"), full_page=True)

            # Drill-down: every file with its state per site, and a link to the DAG run in the Airflow UI.
            row.locator(f"a[href$='/blocks/{block}']").click()
            files = frame.locator("#files tbody tr")
            files.first.wait_for(timeout=30_000)
            assert files.count() == FILES
            assert frame.locator("#files td.state.archived").count() == FILES
            run_link = frame.locator("h1 a.run")
            assert f"/dags/{DAG}/runs/" in (run_link.get_attribute("href") or "")
            page.screenshot(path=str(ARTIFACTS / "ui-block.png"), full_page=True)

            # Charts: the real plotly, served locally, draws the series of the run.
            page.goto(f"{grid.url}/rawflow/charts?hours=48&bucket_minutes=5")
            page.wait_for_selector("#throughput .main-svg", timeout=60_000)
            assert int(page.get_attribute("#throughput", "data-points") or 0) > 0
            page.screenshot(path=str(ARTIFACTS / "ui-charts.png"), full_page=True)

            page.goto(f"{grid.url}/rawflow/kafka")
            assert page.inner_text("#broker") == "reachable"
            assert int(page.inner_text("#total-lag")) == 0
        finally:
            browser.close()
    assert (ARTIFACTS / "ui-matrix.png").stat().st_size > 10_000


def test_view_and_api_refuse_requests_without_airflow_login(grid: UiGrid) -> None:
    block = f"RAW-{grid.block_id}"
    paths = ["/rawflow/", f"/rawflow/blocks/{block}", "/rawflow/api/matrix", f"/rawflow/api/blocks/{block}",
             "/rawflow/api/timeseries", "/rawflow/api/kafka"]  # fmt: skip
    for path in paths:
        status, body = grid.get(path)
        assert status == 401, (path, status)
        assert grid.get(path, token="not-a-jwt")[0] == 401, path
        assert block not in body
    status, page = grid.get("/rawflow/", accept="text/html")
    assert status == 401 and "/auth/login" in page

    guest = grid.token_without_role()
    for path in paths:
        assert grid.get(path, token=guest)[0] == 403, path

    token = grid.token()
    status, body = grid.get("/rawflow/api/matrix?days=7", token=token)
    assert status == 200
    (row,) = [r for r in json.loads(body)["rows"] if r["block"] == block]
    assert row["status"] == "Processed" and row["run_id"]
    assert row["sites"]["IHEP-TAPE"]["processed"] == FILES
    status, body = grid.get(f"/rawflow/api/blocks/{block}?limit=2", token=token)
    assert status == 200 and json.loads(body)["total_files"] == FILES and len(json.loads(body)["files"]) == 2
    status, schema = grid.get("/rawflow/openapi.json")
    assert status == 200 and "/api/matrix" in json.loads(schema)["paths"]


def test_metrics_are_public_aggregates(grid: UiGrid) -> None:
    status, text = grid.get("/rawflow/metrics", accept="text/plain")
    assert status == 200
    assert f'rawflow_replica_files{{site="IHEP-TAPE",state="archived"}} {float(FILES)}' in text
    assert "rawflow_kafka_broker_up 1.0" in text
    assert 'rawflow_monitoring_source_up{source="database"} 1.0' in text
    assert "/juno/" not in text  # no file names


def test_alerts_dag_mails_a_problematic_block_and_site_once(grid: UiGrid) -> None:
    store = MonitoringStore(grid.db_url)
    old = datetime.now(UTC) - timedelta(hours=5)
    try:
        store.record("RAW", "20261001", "JINR-EOS", assigned=8, processed=5, problematic=3, bytes_done=5,
                     last_error="/juno/raw/x.dat: 3 attempts: adler32 mismatch", now=old)  # fmt: skip
    finally:
        store.close()
    grid.api.set_variable("rawflow_alert_deadline_minutes", "60")
    _retry(lambda: grid.api.unpause("rawflow_alerts"), what="rawflow_alerts parsed")
    sent: list[Any] = []
    for _ in range(2):
        run_id = grid.api.trigger("rawflow_alerts", logical_date=None)
        assert grid.api.wait_runs("rawflow_alerts", [run_id], timeout=300)[run_id] == "success"
        sent.extend(grid.api.xcom("rawflow_alerts", run_id, "email_problematic"))
    mail_log = Path(str(grid.state.components["smtp-sink"]["log"])).read_text()
    subject = "Subject: [rawflow] RAW-20261001 at JINR-EOS Problematic: 3 of 8 files"
    # Exactly one e-mail, whichever run (these two or a scheduled one) sent it.
    assert mail_log.count(subject) == 1, mail_log[-2000:]
    assert sent in ([], [{"block": "RAW-20261001", "site": "JINR-EOS", "problematic": 3}])


def test_cli_retransfer_retries_a_site_through_a_dag_run(grid: UiGrid, capsys: pytest.CaptureFixture[str]) -> None:
    from rawflow.cli import main

    catalogue = get_catalogue(grid.db_url)
    try:
        lfns = catalogue.query_files(Block=grid.block_id, Type="RAW")
        victim = next(lfn for lfn in lfns if grid.sites["IN2P3-DCACHE"].keeps(lfn))
        catalogue.set_replica_state([victim], "IN2P3-DCACHE", ReplicaState.BAD, error="marked bad by the test")
    finally:
        catalogue.close()
    argv = ["block", "retransfer", grid.block_id, "--site", "IN2P3-DCACHE", "--catalogue", grid.db_url,
            "--sites", str(grid.state.values["sites_path"]), "--airflow-url", grid.url, "--json"]  # fmt: skip
    os.environ["RAWFLOW_AIRFLOW_USER"], os.environ["RAWFLOW_AIRFLOW_PASSWORD"] = "admin", grid.password
    try:
        assert main(argv) == 0
    finally:
        del os.environ["RAWFLOW_AIRFLOW_USER"], os.environ["RAWFLOW_AIRFLOW_PASSWORD"]
    result = json.loads(capsys.readouterr().out)
    assert result["marked"] == 1 and result["site"] == "IN2P3-DCACHE"
    (run,) = [r for r in grid.api.runs(DAG) if r["dag_run_id"] == result["run_id"]]
    assert run["conf"] == {"sites": ["IN2P3-DCACHE"]}
    assert run["data_interval_start"].startswith(str(grid.day))
    assert grid.api.wait_runs(DAG, [result["run_id"]], timeout=600)[result["run_id"]] == "success"
    catalogue = get_catalogue(grid.db_url)
    try:
        info = catalogue.replica_states([victim], site="IN2P3-DCACHE")[victim]["IN2P3-DCACHE"]
    finally:
        catalogue.close()
    assert info.state is ReplicaState.VALIDATED
