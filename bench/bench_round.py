"""Bench: a day's block through the block DAG's own round (``replication.run_site_round``), no Airflow.

    .venv/bin/python bench/bench_round.py --files 14400 --size 4096          # the issue's day: 4 targets
    .venv/bin/python bench/bench_round.py --files 1000 --legacy              # the pre-issue-10 path (run_block)
    .venv/bin/python bench/bench_round.py --files 1000 --profile /tmp/prof   # py-spy per site process

The local sites' policy as shipped (CNAF-STORM over HTTPS, JINR-EOS via CNAF, IN2P3-DCACHE 1/3, IHEP-TAPE),
a SQLite catalogue, files written straight into the Tier-0's disk and registered (setup, not measured). Each
target site runs its rounds in a process of its own, as the DAG's mapped tasks do, until the site is done
(the block is closed from the start, so the last round verifies and finishes). Then the baseline in the same
run: plain ``xrdcp --parallel P`` from the Tier-0 to every site's root door, over the same file lists.
Nothing is left running. Output: seconds end to end, replicas/s per site and in total, the baseline's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_transfer import T0, clear, seed

from rawflow import replication
from rawflow.catalogue import get_catalogue
from rawflow.grid.xrootd import LocalSites, start_sites
from rawflow.naming import DataType
from rawflow.planning import RetryPolicy
from rawflow.sites import SitesConfig, default_sites_path, load_sites, validate_sites
from rawflow.storage.gfal2_storage import Gfal2Storage
from rawflow.transfer.gfal2_tool import Gfal2Transfertool


def run_site(job: dict[str, Any]) -> dict[str, Any]:
    """One target site's rounds in this process, as one mapped Airflow task runs them."""
    os.environ.update(job["env"])
    sites = validate_sites(job["sites"], source="<bench>")
    catalogue = get_catalogue(job["catalogue"])
    storage = Gfal2Storage(bearer_token="bench", timeout=120)
    tool = Gfal2Transfertool(storage={"options": {"bearer_token": "bench"}})
    site = job["site"]
    kind = DataType.RAW
    retry = RetryPolicy(max_attempts=3, backoff=timedelta(seconds=1))
    start = time.perf_counter()
    rounds = 0
    updates = 0
    if job["legacy"]:
        while time.perf_counter() - start < job["timeout"]:
            rounds += 1
            replication.run_block(
                catalogue=catalogue,
                sites=sites,
                transfertool=tool,
                storage=storage,
                data_type=kind,
                block_id=job["block_id"],
                only=[site],
                retry=retry,
                rounds=1,
            )
            if site == sites.archive.name:
                replication.poll_archive(
                    catalogue=catalogue, sites=sites, storage=storage, data_type=kind, block_id=job["block_id"]
                )
            status = replication.block_status(catalogue, sites, kind, job["block_id"], retry=retry)[site]
            if status.pending == 0:
                break
            time.sleep(1)
    else:
        settings = replication.RoundSettings(
            site=site,
            data_type=kind,
            block_id=job["block_id"],
            close_at=datetime.now(UTC) - timedelta(seconds=1),
            retry=retry,
            chunk_parallel=job["chunk_parallel"],
        )
        totals: Any = None

        def record(progress: Any, held: int) -> None:
            nonlocal updates
            updates += 1

        while time.perf_counter() - start < job["timeout"]:
            result = replication.run_site_round(
                settings,
                catalogue=catalogue,
                sites=sites,
                storage=storage,
                transfertool=lambda: tool,
                totals=totals,
                record=record,
            )
            totals, rounds = result.totals, rounds + 1
            if result.outcome is not replication.RoundOutcome.WAIT:
                break
            time.sleep(0.5)
    status = replication.block_status(catalogue, sites, kind, job["block_id"], retry=retry)[site]
    catalogue.close()
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "site": site,
        "cpu_task": own.ru_utime + own.ru_stime,
        "cpu_copy_children": children.ru_utime + children.ru_stime,
        "seconds": time.perf_counter() - start,
        "rounds": rounds,
        "progress_updates": updates,
        "assigned": status.assigned,
        "processed": status.processed,
        "problematic": status.problematic,
    }


def profiled(job: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run one site under py-spy (a subprocess of this script in --site mode)."""
    spy = Path(sys.executable).with_name("py-spy")
    result_file = out / f"{job['site']}.json"
    cmd = [str(spy), "record", "--rate", "50", "--subprocesses", "--format", "raw", "-o"]
    cmd += [str(out / f"{job['site']}.txt"), "--", sys.executable, __file__, "--site-job", json.dumps(job)]
    cmd += ["--site-result", str(result_file)]
    subprocess.run(cmd, check=True, capture_output=True)
    return dict(json.loads(result_file.read_text()))


def servers_cpu(local: LocalSites) -> float:
    """CPU seconds the sites' xrootd servers (and the TPC helpers they waited for) have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for daemon in local.daemons.values():
        try:
            fields = Path(f"/proc/{daemon.pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return total / tick


def xrdcp_baseline(local: LocalSites, sites: SitesConfig, lfns: dict[str, list[str]], parallel: int) -> float:
    """Plain xrdcp --parallel from the Tier-0 to each site's root door, every site at once (as the DAG)."""
    env = {**os.environ, **local.client_env}
    procs = []
    start = time.perf_counter()
    for site, names in lfns.items():
        directory = names[0].rsplit("/", 1)[0]
        door = local.doors[site]["root"].rstrip("/")
        target = door + directory + "/"
        # A directory target must exist (the rounds made it; the sites were cleared for the baseline).
        parts = urlsplit(door)
        remote = "/" + parts.path.lstrip("/") + directory
        subprocess.run(["xrdfs", parts.netloc, "mkdir", "-p", remote], env=env, check=True)
        with tempfile.NamedTemporaryFile("w", delete=False, suffix=".lst") as listing:
            listing.write("\n".join(sites[T0].pfn(lfn) for lfn in names) + "\n")
        procs.append(
            subprocess.Popen(
                ["xrdcp", "--silent", "--force", "--parallel", str(parallel), "--infiles", listing.name, target],
                env=env,
            )
        )
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(f"xrdcp exited with {codes}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=14400)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--chunk-parallel", type=int, default=4)
    parser.add_argument("--legacy", action="store_true", help="the old path: run_block, chunks one after another")
    parser.add_argument("--profile", type=Path, help="py-spy raw profiles per site into this directory")
    parser.add_argument("--xrdcp-parallel", type=int, default=16)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--site-job", help=argparse.SUPPRESS)
    parser.add_argument("--site-result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.site_job:
        Path(args.site_result).write_text(json.dumps(run_site(json.loads(args.site_job))))
        return 0

    state = Path(tempfile.mkdtemp(prefix="rawflow-bench-round-"))
    state.chmod(0o755)
    local = start_sites(load_sites(default_sites_path()), state)
    try:
        local.start_tape_migrator(interval=2, settle=1)
        os.environ.update(local.client_env)
        sites = local.sites_config
        catalogue_url = f"sqlite:///{state / 'catalogue.db'}"
        catalogue = get_catalogue(catalogue_url)
        t0 = time.perf_counter()
        records = seed(local, sites, catalogue, args.files, args.size, tag=int(time.time()) % 5000)
        print(f"seeded {len(records)} × {args.size} B in {time.perf_counter() - t0:.1f} s", flush=True)
        block_id = records[0].block_id
        catalogue.close()
        targets = [s.name for s in sites.destinations] + [sites.archive.name]
        jobs = [
            {
                "site": name,
                "sites": sites.to_raw(),
                "catalogue": catalogue_url,
                "block_id": block_id,
                "legacy": args.legacy,
                "chunk_parallel": args.chunk_parallel,
                "timeout": args.timeout,
                "env": local.client_env,
            }
            for name in targets
        ]
        servers_before = servers_cpu(local)
        start = time.perf_counter()
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
                results = pool.starmap(profiled, [(job, args.profile) for job in jobs])
        else:
            with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
                results = pool.map(run_site, jobs)
        wall = time.perf_counter() - start
        servers = servers_cpu(local) - servers_before
        replicas = sum(r["processed"] for r in results)
        print(
            f"rawflow ({'legacy run_block' if args.legacy else 'run_site_round'}): {wall:.1f} s end to end, "
            f"{replicas} replicas, {replicas / wall:.2f} replicas/s"
        )
        for r in results:
            rate = r["processed"] / r["seconds"] if r["seconds"] else 0.0
            print(
                f"  {r['site']:<14} {r['processed']:>6}/{r['assigned']:<6} problematic {r['problematic']:<4} "
                f"{r['seconds']:7.1f} s {rate:7.2f} replicas/s, {r['rounds']} rounds, "
                f"{r['progress_updates']} progress updates"
            )
        if "cpu_task" in results[0]:
            task = sum(r["cpu_task"] for r in results)
            children = sum(r["cpu_copy_children"] for r in results)
            print(
                f"CPU per replica: site processes {1000 * task / replicas:.2f} ms, their copy children "
                f"{1000 * children / replicas:.2f} ms, xrootd servers {1000 * servers / replicas:.2f} ms "
                f"(machine: {os.cpu_count()} cores × {wall:.0f} s = {os.cpu_count() * wall:.0f} CPU-s; used "
                f"{task + children + servers:.0f})"
            )
        if not args.no_baseline:
            check = get_catalogue(catalogue_url)
            lfns: dict[str, list[str]] = {}
            for name in targets:
                site = sites[name]
                lfns[name] = [r.lfn for r in records if site.archive or site.keeps(r.lfn)]
            check.close()
            for name in targets:
                clear(local, name, records)
            servers_before = servers_cpu(local)
            clients_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds = xrdcp_baseline(local, sites, lfns, args.xrdcp_parallel)
            clients_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            total = sum(len(v) for v in lfns.values())
            clients = (clients_after.ru_utime + clients_after.ru_stime) - (
                clients_before.ru_utime + clients_before.ru_stime
            )
            print(
                f"baseline CPU per replica: xrdcp {1000 * clients / total:.2f} ms, xrootd servers "
                f"{1000 * (servers_cpu(local) - servers_before) / total:.2f} ms"
            )
            print(
                f"baseline xrdcp --parallel {args.xrdcp_parallel} (4 sites at once): {seconds:.1f} s, "
                f"{total} replicas, {total / seconds:.2f} replicas/s; rawflow/baseline = "
                f"{(replicas / wall) / (total / seconds):.2f}"
            )
    finally:
        local.stop()
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
