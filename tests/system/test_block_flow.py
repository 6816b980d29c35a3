"""The whole flow on the real local grid: Tansu → receiver DAG → catalogue → block DAG → xrootd sites → tape.

Airflow runs as `airflow standalone` (scheduler, triggerer, DAG processor, API server) started by
`rawflow.grid.stack.up`, exactly as `make demo` does; everything is driven through its REST API.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from rawflow import replication
from rawflow.airflow_api import AirflowAPI
from rawflow.catalogue import get_catalogue
from rawflow.catalogue.base import Catalogue, ReplicaState
from rawflow.grid import stack
from rawflow.naming import DataType, block_id_for
from rawflow.sites import SitesConfig, load_sites
from rawflow.testing.fts3_double import Fts3Double
from rawflow.transfer.engine import StorageSpec

FILES_PER_DAY = 12
DAG = "rawflow_block_raw"


class Grid:
    def __init__(self, state: stack.GridState) -> None:
        self.state = state
        values = state.values
        password = json.loads(Path(values["airflow_password_file"]).read_text())[values["airflow_user"]]
        self.api = AirflowAPI(values["airflow_url"], values["airflow_user"], password)
        self.sites: SitesConfig = load_sites(values["sites_path"])

    def catalogue(self) -> Catalogue:
        return get_catalogue(str(self.state.values["catalogue_url"]))

    def announce(
        self,
        day: date,
        count: int = FILES_PER_DAY,
        sizes: tuple[int, int] = (8 * 1024, 256 * 1024),
        damaged: tuple[int, ...] = (),
    ) -> list[tuple[str, int]]:
        """Write ``count`` RAW files of ``day`` into the Tier-0 and announce them on Kafka; the files at the
        ``damaged`` indices are cut in half first (``Announcer.damaged``: announced consistently, malformed)."""
        from rawflow.announcer import Announcer
        from rawflow.kafka import KafkaSettings
        from rawflow.receiver import make_producer
        from rawflow.storage import get_storage

        storage = get_storage("gfal2", bearer_token=self.state.secrets()["storage_token"])
        producer = make_producer(KafkaSettings(bootstrap=str(self.state.values["kafka_bootstrap"])))
        announcer = Announcer(storage, self.sites.tier0, producer, timezone=self.sites.timezone)
        files = announcer.make_files(count, day=day, sizes=sizes)
        files = [Announcer.damaged(f) if i in damaged else f for i, f in enumerate(files)]
        announcer.write(files)
        announcer.announce(files)
        return [(f.lfn, f.size) for f in files]

    def wait_registered(self, day: date, expected: int, timeout: float = 120) -> None:
        catalogue = self.catalogue()
        deadline = time.monotonic() + timeout
        try:
            while True:
                block = catalogue.get_block(DataType.RAW, block_id_for(day))
                if block is not None and block.files >= expected:
                    assert block.files == expected
                    return
                assert time.monotonic() < deadline, f"only {block.files if block else 0}/{expected} registered"
                time.sleep(1)
        finally:
            catalogue.close()

    def progress(self, day: date) -> dict[str, replication.SiteProgress]:
        catalogue = self.catalogue()
        try:
            return replication.block_status(catalogue, self.sites, DataType.RAW, block_id_for(day))
        finally:
            catalogue.close()

    def replicate_results(self, run_id: str) -> dict[str, dict[str, object]]:
        results = {}
        for ti in self.api.task_instances(DAG, run_id):
            if ti["task_id"] == "replicate":
                results[ti["rendered_map_index"]] = self.api.xcom(DAG, run_id, "replicate", ti["map_index"])
        return results


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    var = tmp_path_factory.mktemp("grid")
    os.environ.setdefault("GFAL_PYTHONBIN", "/usr/bin/python3")
    # Raw flow only: no HTCondor pool, and keep-up paused. Unpaused, it processed every RAW block these tests
    # replicate (72 jobs in the pool) on the same 2 cores, which made their timings depend on the pool's load.
    # Airflow and the catalogue on Postgres, as in production: on 2 loaded cores the embedded SQLite's single
    # write lock stalled Airflow's API server and killed its scheduler ("database is locked") mid-test.
    # The embedded default is covered by test_ui, test_shifter, test_ops and test_grid.
    state = stack.up(
        var,
        api_port=None,
        condor=False,
        postgres=os.environ.get("RAWFLOW_TEST_PG_URL") or "private",
        progress=lambda line: print("grid:", line),
    )
    try:
        os.environ["X509_CERT_DIR"] = str(state.values["x509_cert_dir"])
        g = Grid(state)
        for dag_id in ("rawflow_receiver", DAG):
            _retry(lambda dag_id=dag_id: g.api.unpause(dag_id), what=f"{dag_id} parsed")
        _retry(lambda: g.api.pause("rawflow_keepup"), what="rawflow_keepup parsed")
        # Keep the test short: retransfer a bad replica after 2 s instead of a minute.
        g.api.set_variable("rawflow_retransfer_backoff_seconds", "2")
        yield g
    finally:
        stack.purge(var, keep_state=True, progress=lambda line: print("grid:", line))  # logs kept, site data not


def _retry(call: object, *, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()  # type: ignore[operator]
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _days_ago(n: int) -> date:
    return datetime.now(UTC).date() - timedelta(days=n)


def _expected_assignments(grid: Grid, lfns: list[str]) -> dict[str, int]:
    return {
        **{s.name: sum(s.keeps(lfn) for lfn in lfns) for s in grid.sites.destinations},
        grid.sites.archive.name: len(lfns),
    }


def test_backfill_three_days_twice_second_pass_moves_nothing(grid: Grid) -> None:
    days = [_days_ago(n) for n in (6, 5, 4)]
    announced = {day: grid.announce(day) for day in days}
    for day in days:
        grid.wait_registered(day, FILES_PER_DAY)

    backfill = grid.api.backfill(DAG, f"{days[0]}T00:00:00Z", f"{days[-1]}T00:00:00Z")
    assert backfill["dag_id"] == DAG
    run_ids = _wait_for_runs(grid, days)
    states = grid.api.wait_runs(DAG, run_ids, timeout=600)
    assert set(states.values()) == {"success"}, states
    grid.api.wait_backfill(backfill["id"], timeout=120)

    catalogue = grid.catalogue()
    try:
        for day, files in announced.items():
            lfns = [lfn for lfn, _ in files]
            sizes = dict(files)
            progress = grid.progress(day)
            expected = _expected_assignments(grid, lfns)
            assert {name: p.assigned for name, p in progress.items()} == expected
            assert all(p.processed == p.assigned and p.problematic == 0 for p in progress.values()), progress
            summary = catalogue.block_summary(DataType.RAW, block_id_for(day))
            assert summary[grid.sites.archive.name] == {ReplicaState.ARCHIVED: FILES_PER_DAY}
            for site in grid.sites.destinations:
                assert summary.get(site.name, {}) == {ReplicaState.VALIDATED: expected[site.name]}
            block = catalogue.get_block(DataType.RAW, block_id_for(day))
            assert block is not None and not block.is_open and block.files == FILES_PER_DAY
            # The bytes each site holds are exactly the bytes of the files its share gives it.
            for site in [*grid.sites.destinations, grid.sites.archive]:
                held = catalogue.replica_states(lfns, site=site.name)
                assert sum(sizes[lfn] for lfn in held if site.name in held[lfn]) == sum(
                    sizes[lfn] for lfn in lfns if site.archive or site.keeps(lfn)
                )
    finally:
        catalogue.close()

    # Second pass over the same days: every task runs again and finds nothing to move.
    rerun_ids = _rerun(grid, days, run_ids)
    for run_id in rerun_ids:
        results = grid.replicate_results(run_id)
        assert len(results) == 4
        assert sum(int(r["bytes"]) for r in results.values()) == 0  # type: ignore[call-overload]
        assert sum(int(r["copied"]) for r in results.values()) == 0  # type: ignore[call-overload]


def _rerun(grid: Grid, days: list[date], run_ids: list[str], timeout: float = 600) -> list[str]:
    """Backfill ``days`` again with reprocessing: Airflow clears and re-runs the existing runs (same run ids)."""
    before = {r["dag_run_id"]: r["end_date"] for r in grid.api.runs(DAG) if r["dag_run_id"] in run_ids}
    # Let the scheduler finish with the runs first: a reprocessing backfill that arrives while the scheduler is
    # still handling a just-finished run can make Airflow 3.3's scheduler die (IntegrityError on the run's task
    # instances, then ObjectDeletedError), and `airflow standalone` does not restart it.
    time.sleep(15)
    backfill = grid.api.backfill(DAG, f"{days[0]}T00:00:00Z", f"{days[-1]}T00:00:00Z", reprocess="completed")
    deadline = time.monotonic() + timeout
    while True:
        runs = {r["dag_run_id"]: r for r in grid.api.runs(DAG) if r["dag_run_id"] in run_ids}
        again = [rid for rid, r in runs.items() if r["state"] == "success" and r["end_date"] != before[rid]]
        if len(again) == len(run_ids):
            break
        assert time.monotonic() < deadline, {rid: (r["state"], r["end_date"]) for rid, r in runs.items()}
        time.sleep(2)
    grid.api.wait_backfill(backfill["id"], timeout=120)
    return run_ids


def _wait_for_runs(
    grid: Grid, days: list[date], exclude: frozenset[str] | set[str] = frozenset(), timeout: float = 60
) -> list[str]:
    """The run ids of the block DAG for ``days`` (newest run per day), once the backfill created them."""
    wanted = {d.isoformat() for d in days}
    deadline = time.monotonic() + timeout
    while True:
        runs = [r for r in grid.api.runs(DAG) if r["dag_run_id"] not in exclude]
        by_day = {
            r["data_interval_start"][:10]: r["dag_run_id"] for r in runs if r["data_interval_start"][:10] in wanted
        }
        if set(by_day) == wanted:
            return [by_day[d.isoformat()] for d in days]
        assert time.monotonic() < deadline, f"backfill runs not created: {sorted(by_day)}"
        time.sleep(1)


def test_site_down_mid_run_others_finish_then_it_catches_up(grid: Grid) -> None:
    day = _days_ago(3)
    grid.state.stop_site("CNAF-STORM")
    try:
        files = grid.announce(day)
        grid.wait_registered(day, FILES_PER_DAY)
        run_id = grid.api.trigger(DAG, logical_date=f"{day}T00:00:00Z")
        # IN2P3 and the tape finish while CNAF (and JINR, routed via CNAF) wait.
        deadline = time.monotonic() + 300
        while True:
            progress = grid.progress(day)
            if progress["IN2P3-DCACHE"].pending == 0 and progress["IHEP-TAPE"].pending == 0:
                break
            assert time.monotonic() < deadline, progress
            time.sleep(2)
        assert progress["CNAF-STORM"].processed == 0 and progress["CNAF-STORM"].problematic == 0
        assert progress["JINR-EOS"].processed == 0 and progress["JINR-EOS"].problematic == 0
        states = {
            ti["rendered_map_index"]: ti["state"]
            for ti in grid.api.task_instances(DAG, run_id)
            if ti["task_id"] == "replicate"
        }
        # Still going (deferred, running, or retrying after Airflow 3.3's deferral race): not finished either way.
        assert states["CNAF-STORM"] not in ("success", "failed", "upstream_failed", "skipped")
    finally:
        grid.state.start_site("CNAF-STORM")
    states = grid.api.wait_runs(DAG, [run_id], timeout=600)
    assert states[run_id] == "success"
    progress = grid.progress(day)
    assert all(p.pending == 0 and p.problematic == 0 for p in progress.values()), progress
    assert progress["CNAF-STORM"].processed == len(files)
    # The outage cost no transfer attempts: each CNAF replica was copied once.
    catalogue = grid.catalogue()
    try:
        replicas = catalogue.replica_states([lfn for lfn, _ in files], site="CNAF-STORM")
        assert {info["CNAF-STORM"].attempts for info in replicas.values()} == {1}
    finally:
        catalogue.close()


def test_corrupted_replica_is_caught_and_retransferred(grid: Grid) -> None:
    day = _days_ago(2)
    files = grid.announce(day)
    grid.wait_registered(day, FILES_PER_DAY)
    run_id = grid.api.trigger(DAG, logical_date=f"{day}T00:00:00Z")
    assert grid.api.wait_runs(DAG, [run_id], timeout=600)[run_id] == "success"

    victim = files[0][0]
    local = grid.state.local_sites
    assert local is not None
    on_disk = [p for p in (local.layouts["JINR-EOS"].data_dir).rglob(Path(victim).name) if p.is_file()]
    assert len(on_disk) == 1
    data = bytearray(on_disk[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    on_disk[0].write_bytes(bytes(data))

    _rerun(grid, [day], [run_id])

    catalogue = grid.catalogue()
    try:
        info = catalogue.replica_states([victim], site="JINR-EOS")[victim]["JINR-EOS"]
        assert info.state is ReplicaState.VALIDATED and info.attempts == 2
        record = catalogue.get_file(victim)
    finally:
        catalogue.close()
    from rawflow.checksum import adler32_bytes

    assert record is not None and adler32_bytes(on_disk[0].read_bytes()) == record.adler32


@contextlib.contextmanager
def fts3_backend(grid: Grid) -> Iterator[Fts3Double]:
    """Point the grid's Airflow at an FTS3-REST test double (no FTS server can run here) for the block's copies."""
    token = secrets.token_urlsafe(24)
    spec = StorageSpec(options={"bearer_token": grid.state.secrets()["storage_token"]})
    with Fts3Double(token=token, storage=spec) as fts:
        grid.api.request(
            "PATCH",
            "/connections/rawflow_fts3",
            {"connection_id": "rawflow_fts3", "conn_type": "http", "host": fts.url, "password": token},
        )
        grid.api.set_variable("rawflow_transfer_backend", "fts3")
        try:
            yield fts
        finally:
            fts.gate.set()
            grid.api.set_variable("rawflow_transfer_backend", "gfal2")


def test_fts3_backend_through_the_dag(grid: Grid) -> None:
    """The block DAG with the fts3 backend: the task defers while the jobs run, each file is copied once."""
    day = _days_ago(1)
    with fts3_backend(grid) as fts:
        files = grid.announce(day)
        grid.wait_registered(day, FILES_PER_DAY)
        run_id = grid.api.trigger(DAG, logical_date=f"{day}T00:00:00Z")
        assert grid.api.wait_runs(DAG, [run_id], timeout=600)[run_id] == "success"
        lfns = [lfn for lfn, _ in files]
        expected = _expected_assignments(grid, lfns)
        progress = grid.progress(day)
        assert all(p.processed == expected[name] and p.pending == 0 for name, p in progress.items()), progress
        # Every replica (three destinations and the tape) was copied by FTS once and only once.
        assert fts.copies == sum(expected.values())
        # Airflow 3.3 sometimes fails a task that resumes from a deferral (apache/airflow#72716: a stale
        # executor event); the retry re-plans, finds the files there and copies nothing again, as asserted above.
        assert len(fts.jobs) >= len(expected)


def _processes_of(home: str | None, title: str) -> list[int]:
    """PIDs whose command line contains ``title`` and (with ``home``) whose AIRFLOW_HOME is this grid's: other
    grids may run. A process that set its title (setproctitle) may have overwritten its environment: pass None
    and a title that is unique by itself (a task's UUID)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if title in cmdline and (home is None or f"AIRFLOW_HOME={home}".encode() in environ):
            found.append(int(entry.name))
    return found


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_triggerer_killed_while_fts_jobs_wait_run_recovers_nothing_submitted_twice(grid: Grid) -> None:
    day = _days_ago(7)
    home = str(grid.state.values["airflow_home"])
    with fts3_backend(grid) as fts:
        fts.gate.clear()  # jobs stay SUBMITTED at "FTS" until the triggerer has been killed and replaced
        files = grid.announce(day)
        grid.wait_registered(day, FILES_PER_DAY)
        run_id = grid.api.trigger(DAG, logical_date=f"{day}T00:00:00Z")

        def deferred_on_fts() -> bool:
            states = [ti["state"] for ti in grid.api.task_instances(DAG, run_id) if ti["task_id"] == "replicate"]
            return len(fts.jobs) >= 3 and states.count("deferred") >= 3

        _wait(deferred_on_fts, "replicate tasks deferred on FTS3 jobs")
        submitted_before = len(fts.jobs)
        triggerers = _processes_of(home, "airflow triggerer")
        assert triggerers, "the standalone triggerer process was not found"
        for pid in triggerers:
            os.kill(pid, signal.SIGKILL)
        grid.state.start_triggerer()
        fts.gate.set()
        assert grid.api.wait_runs(DAG, [run_id], timeout=600)[run_id] == "success"

    lfns = [lfn for lfn, _ in files]
    expected = _expected_assignments(grid, lfns)
    progress = grid.progress(day)
    assert all(p.processed == expected[name] and p.pending == 0 for name, p in progress.items()), progress
    # The new triggerer took the waits over; no job was submitted again, no file copied twice.
    assert fts.copies == sum(expected.values())
    # Each destination was in exactly one FTS job: the retried waits resubmitted nothing under a new id.
    per_job = [{row.dest_surl for row in job.rows} for job in fts.jobs.values()]
    all_destinations = [dest for dests in per_job for dest in dests]
    assert len(all_destinations) == len(set(all_destinations)) == sum(expected.values())
    assert submitted_before >= 3


def test_worker_killed_mid_transfer_run_recovers(grid: Grid) -> None:
    """SIGKILL the task process while it copies (gfal2 backend): Airflow retries the task, which finds what was
    already copied (right size and adler32) and copies only the rest; every replica ends validated."""
    day = _days_ago(8)
    files = grid.announce(day, count=24, sizes=(6 * 1024 * 1024, 8 * 1024 * 1024))
    grid.wait_registered(day, 24)
    run_id = grid.api.trigger(DAG, logical_date=f"{day}T00:00:00Z")
    catalogue = grid.catalogue()
    try:

        def copying_to_cnaf() -> bool:
            states = catalogue.replica_states([lfn for lfn, _ in files], site="CNAF-STORM")
            return any(by["CNAF-STORM"].state is ReplicaState.COPYING for by in states.values())

        _wait(copying_to_cnaf, "copies to CNAF-STORM under way", timeout=300)
        tis = {
            ti["rendered_map_index"]: ti for ti in grid.api.task_instances(DAG, run_id) if ti["task_id"] == "replicate"
        }
        victims = _processes_of(None, f"airflow worker -- {tis['CNAF-STORM']['id']}")
        assert victims, "the CNAF-STORM task process was not found"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
    finally:
        catalogue.close()
    assert grid.api.wait_runs(DAG, [run_id], timeout=600)[run_id] == "success"
    tries = [
        ti["try_number"] for ti in grid.api.task_instances(DAG, run_id) if ti["rendered_map_index"] == "CNAF-STORM"
    ]
    # The kill cost one try; Airflow 3.3's deferral race (apache/airflow#72716) may add another.
    assert len(tries) == 1 and tries[0] >= 2
    progress = grid.progress(day)
    assert all(p.pending == 0 and p.problematic == 0 for p in progress.values()), progress
    catalogue = grid.catalogue()
    try:
        replicas = catalogue.replica_states([lfn for lfn, _ in files], site="CNAF-STORM")
        # One interrupted attempt at most: a file is never copied more than twice, and only if the kill caught it.
        assert {by["CNAF-STORM"].state for by in replicas.values()} == {ReplicaState.VALIDATED}
        assert max(by["CNAF-STORM"].attempts for by in replicas.values()) <= 2
    finally:
        catalogue.close()


def test_progress_never_claims_more_than_the_catalogue_during_a_multi_chunk_block(grid: Grid) -> None:
    """While a block of several chunks per site is copied, the view's API never shows a site with fewer pending
    files than the catalogue, nor "Processed" while the catalogue has files pending there."""
    import urllib.request

    day = _days_ago(9)
    block = f"RAW-{block_id_for(day)}"
    count = 240  # 6 chunks of 40 per full-share site
    grid.announce(day, count=count, sizes=(4096, 8192))
    grid.wait_registered(day, count)
    token = grid.api._login()
    run_id = grid.api.trigger(DAG, logical_date=f"{day}T00:00:00Z")

    def view() -> dict[str, dict[str, object]]:
        request = urllib.request.Request(f"{grid.api.url}/rawflow/api/matrix?days=10")
        request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=30) as resp:
            rows = json.load(resp)["rows"]
        return next((dict(r["sites"]) for r in rows if r["block"] == block), {})

    polls = seen_partial = 0
    deadline = time.monotonic() + 600
    while True:
        shown = view()  # first what the shifter sees, then the truth: the truth can only have moved on since
        truth = grid.progress(day)
        polls += 1
        for site, cell in shown.items():
            pending_now = truth[site].pending
            assert int(cell["pending"]) >= pending_now, (site, cell, truth[site])  # type: ignore[call-overload]
            if pending_now:
                assert cell["status"] != "Processed", (site, cell, truth[site])
            if 0 < int(cell["processed"]) < int(cell["assigned"]):  # type: ignore[call-overload]
                seen_partial += 1
        if all(p.pending == 0 for p in truth.values()) and len(shown) == len(truth):
            break
        assert time.monotonic() < deadline, truth
        time.sleep(1)
    assert grid.api.wait_runs(DAG, [run_id], timeout=600)[run_id] == "success"
    final = view()
    assert {site: cell["status"] for site, cell in final.items()} == dict.fromkeys(final, "Processed")
    # Progress arrived chunk by chunk, not once per round: some polls saw a site part-way through.
    assert polls > 3 and seen_partial > 0, (polls, seen_partial)
