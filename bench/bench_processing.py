"""Bench: N RAW files converted to RTRAW through Rawflow's HTCondor path vs the same jobs submitted directly.

    .venv/bin/python bench/bench_processing.py              # 200 files of 64 KiB (the issue's size)
    .venv/bin/python bench/bench_processing.py --files 40   # a quick run

Rawflow: ``run_keepup_round`` with the raw2rtraw stage only (plan from lineage → one cluster per batch of
200 → poll → check size/adler32/events at the Tier-0 → register with lineage). Direct: the same wrapper and
arguments in one cluster per 200 jobs with the htcondor2 bindings, polled until every job completed. Both
run on one private pool (real xrootd Tier-0, jobs stage in and out over xrootd) in the same process, one after
the other. Reported: wall time, overhead per job (Rawflow − direct) / N, ratio (target ≤ 1.2), and the
latency from RAW registered to RTRAW registered (p50, p95).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import zlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from rawflow.catalogue.base import FileRecord
from rawflow.catalogue.sql import SqlCatalogue
from rawflow.catalogue.sql import files as files_table
from rawflow.compute import get_compute_backend
from rawflow.compute.htcondor_backend import item_data, submit_description
from rawflow.grid.condor import ensure_installed, start_pool, stop_pool
from rawflow.grid.xrootd import start_sites
from rawflow.naming import DataType, RawFileName, block_id_for, derived_lfn, lfn_for
from rawflow.payloads.rawformat import synthesize
from rawflow.processing.jobs import JobStore
from rawflow.processing.keepup import KeepupContext, run_keepup_round
from rawflow.processing.planning import RAW2RTRAW, RetryPolicy, attempt_key, batches, plan_conversions
from rawflow.sites import default_sites_path, load_sites
from rawflow.storage.gfal2_storage import Gfal2Storage


def make_raw(storage: Gfal2Storage, url_of: object, day: date, n: int, tag: str, size: int) -> list[FileRecord]:
    records = []
    for seq in range(1, n + 1):
        name = RawFileName.build(
            daq="JUNO",
            run_number=1000 + seq // 100,
            stream_type="Physics",
            stream_name="Global",
            file_tag=tag,
            file_time=datetime(day.year, day.month, day.day, 1, 0, 0) + timedelta(seconds=seq),
            file_sequence=seq,
        ).name
        lfn = lfn_for(DataType.RAW, day, name)
        data, _ = synthesize(run=1000 + seq // 100, stream="Global", sequence=seq, start_time_ns=seq, size=size)
        storage.put_bytes(url_of(lfn), data)  # type: ignore[operator]
        records.append(
            FileRecord(
                lfn,
                len(data),
                f"{zlib.adler32(data):08x}",
                DataType.RAW,
                block_id_for(day),
                1000 + seq // 100,
                "Global",
                datetime.now(UTC),
            )
        )
    return records


def direct(backend_config: str, specs: list[object], timeout: float) -> float:
    """The same jobs with the bindings only: one cluster per 200, poll the schedd until all completed."""
    import htcondor2

    os.environ["CONDOR_CONFIG"] = backend_config
    htcondor2.reload_config()
    schedd = htcondor2.Schedd()
    started = time.monotonic()
    clusters = []
    for n, batch in enumerate(batches(specs, 200)):
        name = f"direct-{os.getpid()}-{n}"
        result = schedd.submit(htcondor2.Submit(submit_description(name)), itemdata=iter(item_data(batch)))  # type: ignore[arg-type]
        clusters.append(result.cluster())
    constraint = " || ".join(f"ClusterId == {c}" for c in clusters)
    while time.monotonic() - started < timeout:
        left = schedd.query(constraint=f"({constraint}) && JobStatus != 4", projection=["ClusterId"])
        if not left:
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"direct jobs not finished after {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--kib", type=int, default=64)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--poll", type=float, default=2.0, help="Rawflow's poll interval (the operator's is 10 s)")
    args = parser.parse_args()

    ensure_installed()
    work = Path(tempfile.mkdtemp(prefix="rawflow-bench-processing-"))
    sites_dir = Path(tempfile.mkdtemp(prefix="rawflow-bench-sites-"))
    sites_dir.chmod(0o755)
    local = start_sites(load_sites(default_sites_path()), sites_dir)
    pool = start_pool(work / "pool", num_cpus=args.cpus)
    os.environ.update(local.client_env)
    try:
        storage = Gfal2Storage(timeout=120)
        sites = local.sites_config
        db = f"sqlite:///{work}/catalogue.db"
        catalogue = SqlCatalogue(db)
        backend = get_compute_backend("htcondor", condor_config=str(pool.client_config_path), timeout=60)
        ctx = KeepupContext(
            catalogue=catalogue,
            backend=backend,
            storage=storage,
            sites=sites,
            jobs=JobStore(db),
            batch_size=200,
            policy=RetryPolicy(backoff=timedelta(seconds=1)),
            stages=(RAW2RTRAW,),
        )
        day_a, day_b = date(2026, 10, 1), date(2026, 10, 2)
        size = args.kib * 1024
        rawflow_files = make_raw(storage, ctx.url, day_a, args.files, "ra", size)
        direct_files = make_raw(storage, ctx.url, day_b, args.files, "di", size)

        # Direct first (warms the pool the same way for both), into other output names.
        planned = plan_conversions(
            RAW2RTRAW, [(f.lfn, f.run_number) for f in direct_files], block_id=block_id_for(day_b)
        )
        specs = [job.spec(1, ctx.url) for job in planned]
        specs = [type(s)(key=attempt_key(s.key, 9), payload=s.payload, args=s.args) for s in specs]
        direct_s = direct(str(pool.client_config_path), specs, args.timeout)

        catalogue.register_files(rawflow_files, site=sites.tier0.name)
        started = time.monotonic()
        report = run_keepup_round(
            ctx, block_id_for(day_a), timeout=timedelta(seconds=args.timeout), poll_interval=args.poll
        )
        rawflow_s = time.monotonic() - started
        assert not report.timed_out and report.registered.get(RAW2RTRAW) == args.files, report.to_dict()

        with catalogue._engine.connect() as conn:  # the registration times, as the catalogue recorded them
            registered = dict(conn.execute(sa.select(files_table.c.lfn, files_table.c.registered_at)).all())
        latencies = sorted(
            (registered[derived_lfn(f.lfn, DataType.RTRAW)] - registered[f.lfn]).total_seconds() for f in rawflow_files
        )
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
        print(f"files: {args.files} × {args.kib} KiB, pool: {args.cpus} slots, batch 200")
        print(f"direct htcondor2 : {direct_s:8.1f} s  ({direct_s / args.files * 1000:7.1f} ms/job)")
        print(f"rawflow keep-up  : {rawflow_s:8.1f} s  ({rawflow_s / args.files * 1000:7.1f} ms/job)")
        print(
            f"overhead per job : {(rawflow_s - direct_s) / args.files * 1000:+7.1f} ms   ratio {rawflow_s / direct_s:.2f} (target ≤ 1.2)"
        )
        print(f"RAW registered → RTRAW registered: p50 {statistics.median(latencies):.1f} s, p95 {p95:.1f} s")
        backend.close()
        catalogue.close()
    finally:
        stop_pool(work / "pool")
        local.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sites_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
