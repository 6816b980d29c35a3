"""Bench: one block through the real DAG path, side by side with plain tools copying the same files.

    .venv/bin/python bench/bench_block.py [--files 300] [--kib 4] [--parallel 20] [--gfal-processes 8]
                                          [--baseline streamed|tpc]
                                          [--timeout 3600] [--json out.json] [--keep] [--free-space]

Everything is real and local: `rawflow grid up` (airflow standalone with the receiver and block DAGs, Tansu,
the five loopback xrootd sites, the tape emulation). N files of S KiB are written into the Tier-0 for a past
receiving day (untimed), then:

- registration: the N announcements published → the block holds N files (receiver DAG, full Tier-0 checks);
- the block DAG run for that day (4 targets): replicas/s per site from the run's start to the moment the site's
  last replica is good (validated, or archived for the tape site), and end to end (first announcement → run
  finished);
- task-log bytes per file: every task log of the receiver and block DAGs written during the phase, / N;
- baselines, in the same run on the same servers, every destination at once, into separate directories:
  *same URLs* (what the issue's ratio is judged on): each destination's files copied from where Rawflow reads
  them (Tier-0, or the ``via`` hop) to the site's own URL with a plain tool: ``xrdcp --parallel P --cksum
  adler32:source`` where both ends are root://, else G concurrent ``gfal-copy -K adler32 --from-file`` processes;
  *root-door reference*: plain xrdcp from the Tier-0's root door to every destination's root door (streamed,
  or ``--baseline tpc``), whatever protocol Rawflow uses for that site. Replicas/s per site and overall.

Exit status: 0 when both paths copied every file (the figures are reported, not judged), 1 on a real failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from rawflow.airflow_api import AirflowAPI  # noqa: E402
from rawflow.announcer import Announcer, SyntheticFile  # noqa: E402
from rawflow.catalogue import get_catalogue  # noqa: E402
from rawflow.catalogue.base import ReplicaState  # noqa: E402
from rawflow.errors import RawflowError  # noqa: E402
from rawflow.grid import stack  # noqa: E402
from rawflow.kafka import KafkaSettings  # noqa: E402
from rawflow.naming import DataType, block_id_for  # noqa: E402
from rawflow.planning import targets  # noqa: E402
from rawflow.receiver import make_producer  # noqa: E402
from rawflow.sites import SitesConfig, load_sites  # noqa: E402
from rawflow.storage import get_storage  # noqa: E402

BLOCK_DAG = "rawflow_block_raw"
GOOD = (ReplicaState.VALIDATED, ReplicaState.ARCHIVED)


class BenchFailure(Exception):
    """A real failure: a copy lost, a run failed, a wait ran out."""


def wait_for(what: str, timeout: float, predicate: Any, poll: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchFailure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def log_bytes(airflow_home: Path, since: float) -> int:
    """Bytes of the receiver and block DAG task logs written since ``since`` (epoch seconds)."""
    total = 0
    for dag_id in ("rawflow_receiver", BLOCK_DAG):
        for path in (airflow_home / "logs" / f"dag_id={dag_id}").rglob("*.log"):
            try:
                st = path.stat()
            except OSError:
                continue
            if st.st_mtime >= since:
                total += st.st_size
    return total


class Bench:
    def __init__(self, state: stack.GridState, files: int, kib: int, day: date) -> None:
        self.state = state
        values = state.values
        password = json.loads(Path(values["airflow_password_file"]).read_text())[values["airflow_user"]]
        self.api = AirflowAPI(values["airflow_url"], values["airflow_user"], password)
        self.sites: SitesConfig = load_sites(values["sites_path"])
        self.storage = get_storage("gfal2", bearer_token=state.secrets()["storage_token"])
        self.day = day
        self.block_id = block_id_for(day)
        producer = make_producer(KafkaSettings(bootstrap=str(values["kafka_bootstrap"])))
        self.announcer = Announcer(self.storage, self.sites.tier0, producer, timezone=self.sites.timezone)
        self.count, self.size = files, kib * 1024
        self.files: list[SyntheticFile] = []
        self.targets = [s.name for s in targets(self.sites)]

    def write_files(self) -> None:
        """Make the block's files and write them into the Tier-0, a slice at a time, keeping only what the
        announcements need: 200 × 64 MiB held at once took 6 GB of memory after 5 minutes."""
        per_slice = max(1, min(1000, (256 << 20) // self.size))
        for first in range(0, self.count, per_slice):
            made = self.announcer.make_files(
                min(per_slice, self.count - first),
                day=self.day,
                sizes=(self.size, self.size),
                first_sequence=first + 1,
                reuse_pool=True,
            )
            self.announcer.write(made)
            self.files += [replace(f, content=b"") for f in made]

    def catalogue_counts(self) -> tuple[int, dict[str, tuple[int, int]]]:
        """(files in the block, site → (good replicas, assigned))."""
        catalogue = get_catalogue(str(self.state.values["catalogue_url"]))
        try:
            block = catalogue.get_block(DataType.RAW, self.block_id)
            summary = catalogue.block_summary(DataType.RAW, self.block_id) if block else {}
        finally:
            catalogue.close()
        files = block.files if block else 0
        counts = {}
        for site in self.targets:
            states = summary.get(site, {})
            good = sum(n for state, n in states.items() if state in GOOD)
            counts[site] = (good, self.assigned(site))
        return files, counts

    def assigned(self, site: str) -> int:
        s = self.sites[site]
        return sum(1 for f in self.files if s.archive or s.keeps(f.lfn))

    def rawflow(self, timeout: float) -> dict[str, Any]:
        since = time.time()
        started = time.monotonic()
        self.announcer.announce(self.files)
        wait_for("registration", timeout, lambda: self.catalogue_counts()[0] >= len(self.files), poll=0.5)
        registered = time.monotonic() - started
        run_id = self.api.trigger(BLOCK_DAG, logical_date=f"{self.day}T00:00:00Z")
        run_started = time.monotonic()
        done_at: dict[str, float] = {}

        def all_sites_done() -> bool:
            _, counts = self.catalogue_counts()
            now = time.monotonic()
            for site, (good, assigned) in counts.items():
                if site not in done_at and good >= assigned:
                    done_at[site] = now
            return len(done_at) == len(self.targets)

        wait_for("every site's replicas", timeout, all_sites_done, poll=1.0)
        state = self.api.wait_runs(BLOCK_DAG, [run_id], timeout=timeout)[run_id]
        end_to_end = time.monotonic() - started
        if state != "success":
            raise BenchFailure(f"block DAG run {run_id} ended {state}")
        home = Path(self.state.values["airflow_home"])
        per_site = {
            site: {"replicas": self.assigned(site), "seconds": done_at[site] - run_started} for site in self.targets
        }
        return {
            "registration_s": registered,
            "registration_files_per_s": len(self.files) / registered,
            "sites": per_site,
            "replication_s": max(v["seconds"] for v in per_site.values()),
            "end_to_end_s": end_to_end,
            "log_bytes_per_file": log_bytes(home, since) / len(self.files),
            "run_id": run_id,
        }

    def local_path(self, site: str, url: str) -> Path:
        """Where a file or directory of a loopback site lies on this machine's disk."""
        local = self.state.local_sites
        assert local is not None
        return local.layouts[site].data_dir / urlsplit(url).path.lstrip("/")

    def bytes_needed(self) -> int:
        """Disk Rawflow's phase still needs at its peak once the Tier-0 holds the files: every destination's copy,
        and the tape site's copy twice (its disk buffer and its "tape")."""
        replicas = sum(self.assigned(site) * (2 if self.sites[site].archive else 1) for site in self.targets)
        return replicas * self.size

    def drop_destination_copies(self) -> None:
        """Delete Rawflow's copies at the destinations no other site reads from (``via`` hops are sources of the
        same-URL baseline), and the tape site's "tape", to make room for the baselines (``--free-space``)."""
        local = self.state.local_sites
        assert local is not None
        hops = {hop for site in self.targets for hop in self.sites[site].via}
        block_dir = self.files[0].lfn.rsplit("/", 1)[0]
        for site in self.targets:
            if site in hops:
                continue
            shutil.rmtree(self.local_path(site, self.sites[site].pfn(block_dir)), ignore_errors=True)
            if self.sites[site].archive:
                shutil.rmtree(local.layouts[site].mss_dir, ignore_errors=True)
                local.layouts[site].mss_dir.mkdir()

    def baseline(
        self, parallel: int, mode: str, gfal_processes: int, free_space: bool = False, gfal_sample: int = 0
    ) -> dict[str, Any]:
        """The same copies with plain tools, every destination at once, into a separate directory per site.

        ``same-urls`` (the comparison the issue asks for): each destination's files copied from the replica Rawflow
        reads them from (the Tier-0, or the hop of a ``via`` route) to the URL Rawflow writes (the site's
        ``url_prefix``): ``xrdcp --parallel`` where both ends are root://, else ``gfal_processes`` concurrent
        ``gfal-copy --from-file`` processes (davs:// is not an xrdcp protocol here). ``streamed``/``tpc``: the
        reference the earlier runs used, plain xrdcp from the Tier-0's root door to every destination's root door,
        whatever protocol Rawflow uses for it."""
        local = self.state.local_sites
        assert local is not None
        env = {**os.environ, "X509_CERT_DIR": str(self.state.values["x509_cert_dir"])}
        stamp = datetime.now(UTC).strftime("%H%M%S")

        def endpoints(site: str) -> tuple[Callable[[str], str], str]:
            """(LFN → source URL, destination prefix) of this site's copies."""
            if mode != "same-urls":
                tier0 = local.layouts[self.sites.tier0.name].door("root")
                return (lambda lfn: f"{tier0}{lfn}"), local.layouts[site].door("root")
            route = self.sites.route_to(site)
            source = route[-2] if len(route) > 1 else self.sites.tier0
            return source.pfn, self.sites[site].url_prefix

        def copy(site: str) -> tuple[str, dict[str, Any]]:
            lfns = [f.lfn for f in self.files if self.sites[site].archive or self.sites[site].keeps(f.lfn)]
            source_url, door = endpoints(site)
            directory = f"{door}/bench-baseline-{stamp}/{site}"
            self.storage.mkdir_p(directory)
            sources = [source_url(lfn) for lfn in lfns]
            started = time.monotonic()
            if sources[0].startswith("root://") and door.startswith("root://"):
                tool = f"xrdcp --parallel {parallel}"
                argv = ["xrdcp", "--silent", "--force", "--parallel", str(parallel), "--cksum", "adler32:source"]
                if mode == "tpc":
                    argv += ["--tpc", "only"]
                runs = [[*argv, *sources, f"{directory}/"]]
            else:
                # gfal-copy costs seconds per small file (measured: ~6 files/s with 16 processes on 2 cores, where
                # Rawflow's copy children do ~70): a sample of the list gives its rate without an hour's wait.
                if gfal_sample and len(sources) > gfal_sample:
                    lfns, sources = lfns[:gfal_sample], sources[:gfal_sample]
                tool = f"gfal-copy ×{gfal_processes}"
                runs = []
                for n in range(gfal_processes):
                    part = sources[n::gfal_processes]
                    if part:
                        listing = Path(tempfile.mkstemp(prefix="bench-gfal-copy-", suffix=".txt")[1])
                        listing.write_text("\n".join(part) + "\n")
                        runs.append(["gfal-copy", "-f", "-K", "adler32", "--from-file", str(listing), f"{directory}/"])
            procs = [
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
                for argv in runs
            ]
            errors = [(p.communicate()[1], p.returncode) for p in procs]
            seconds = time.monotonic() - started
            for stderr, code in errors:
                if code != 0:
                    raise BenchFailure(f"{tool} to {site} failed ({code}): {stderr.strip()[-600:]}")
            listed = self.storage.listdir(directory)
            if len(listed) != len(lfns):
                raise BenchFailure(f"{tool} to {site}: {len(listed)} of {len(lfns)} files arrived")
            if free_space:
                shutil.rmtree(self.local_path(site, directory), ignore_errors=True)
            wanted = sum(1 for f in self.files if self.sites[site].archive or self.sites[site].keeps(f.lfn))
            return site, {
                "replicas": len(lfns),
                "seconds": seconds,
                # A sampled site's time for all its files at the sample's rate (the "all sites" figure uses it).
                "seconds_all": seconds * wanted / len(lfns),
                "sampled": len(lfns) < wanted,
                "tool": tool,
                "from": sources[0].split("://")[0],
            }

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(self.targets)) as pool:
            results = dict(pool.map(copy, self.targets))
        total = time.monotonic() - started
        # Every destination at once: the block is done when the slowest site is; a sampled site counts with its
        # whole list at its measured rate.
        whole = max([total, *(r["seconds_all"] for r in results.values())])
        return {"mode": mode, "sites": results, "replication_s": whole, "measured_s": total}


def render(files: int, kib: int, rawflow: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> str:
    same, reference = baselines["same-urls"], baselines["reference"]
    lines = [
        f"block of {files} × {kib} KiB; registration {rawflow['registration_s']:.1f} s "
        f"({rawflow['registration_files_per_s']:.0f} files/s); end to end {rawflow['end_to_end_s']:.1f} s; "
        f"task logs {rawflow['log_bytes_per_file']:.0f} bytes/file",
        f"{'site':<14} {'replicas':>8} {'rawflow /s':>10} | {'same URLs, plain tool':<22} {'/s':>7} {'ratio':>6} | "
        f"{'xrdcp root doors /s':>19} {'ratio':>6}",
    ]
    total = 0
    for site, r in rawflow["sites"].items():
        b, x = same["sites"][site], reference["sites"][site]
        rate_r = r["replicas"] / max(r["seconds"], 1e-9)
        rate_b = b["replicas"] / max(b["seconds"], 1e-9)
        rate_x = x["replicas"] / max(x["seconds"], 1e-9)
        total += r["replicas"]
        lines.append(
            f"{site:<14} {r['replicas']:>8} {rate_r:>10.1f} | {b['from'] + ' → ' + b['tool']:<22} {rate_b:>7.1f} "
            f"{rate_r / rate_b:>6.2f} | {rate_x:>19.1f} {rate_r / rate_x:>6.2f}"
        )
    all_r = total / rawflow["replication_s"]
    # A gfal-copy site may have copied a sample (--gfal-sample): replication_s counts its whole list at its rate.
    all_b = total / same["replication_s"]
    all_x = total / reference["replication_s"]
    lines.append(
        f"{'all sites':<14} {total:>8} {all_r:>10.1f} | {'(all at once)':<22} {all_b:>7.1f} {all_r / all_b:>6.2f} | "
        f"{all_x:>19.1f} {all_r / all_x:>6.2f}"
    )
    mb = kib * 1024 / 1e6  # every file has the same size: MB/s is replicas/s times this
    lines.append(
        f"{'bytes':<14} {total * mb / 1e3:>6.1f} GB {all_r * mb:>7.1f} MB/s | {'':<22} {all_b * mb:>7.1f} "
        f"{all_r / all_b:>6.2f} | {all_x * mb:>14.1f} MB/s {all_r / all_x:>6.2f}"
    )
    sampled = ""
    if any(b["sampled"] for b in same["sites"].values()):
        sampled = f" (sampled sites extrapolated to all their files; {same['measured_s']:.1f} measured)"
    lines.append(
        f"(seconds: rawflow {rawflow['replication_s']:.1f}, same URLs {same['replication_s']:.1f}{sampled}, "
        "xrdcp root doors "
        f"{reference['replication_s']:.1f} ({reference['mode']}); rawflow: block DAG run start → site's last replica "
        "good, tape = archived; baselines: every destination at once, checksums compared by the tool)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--files", type=int, default=300, help="files in the block (default 300; a day: 14400)")
    parser.add_argument("--kib", type=int, default=4, help="file size in KiB (default 4; large: 65536)")
    parser.add_argument("--parallel", type=int, default=20, help="xrdcp --parallel in the baselines")
    parser.add_argument(
        "--gfal-processes", type=int, default=8, help="concurrent gfal-copy processes per destination (davs copies)"
    )
    parser.add_argument(
        "--gfal-sample",
        type=int,
        default=1200,
        help="gfal-copy baseline: copy at most this many of a site's files and report its rate (0: all)",
    )
    parser.add_argument(
        "--baseline", choices=("streamed", "tpc"), default="streamed", help="xrdcp mode of the root-door reference"
    )
    parser.add_argument(
        "--postgres",
        default="private",
        help="Airflow's and the catalogue's database: 'private' (a Postgres of the bench's own, as production "
        "runs; default), a postgresql:// URL, or 'sqlite' (the embedded default, whose single write lock stalls "
        "the API server at this volume)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="bound on every wait, seconds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the grid's state and data afterwards")
    parser.add_argument(
        "--free-space",
        action="store_true",
        help="delete Rawflow's destination copies before the baselines and each baseline's copies after it "
        "(for large files: 200 × 64 MiB needs ~67 GiB at Rawflow's peak)",
    )
    parser.add_argument(
        "--with-keepup",
        action="store_true",
        help="also start the HTCondor pool, so keep-up converts the block's files while it is replicated "
        "(off by default: the bench measures the raw flow alone, keep-up's DAG is paused)",
    )
    args = parser.parse_args(argv)

    var = Path(tempfile.mkdtemp(prefix="rawflow-bench-block-"))
    bench: Bench | None = None
    os.environ.setdefault("GFAL_PYTHONBIN", "/usr/bin/python3")
    try:
        state = stack.up(
            var,
            api_port=None,
            postgres=None if args.postgres == "sqlite" else args.postgres,
            condor=args.with_keepup,
            progress=lambda line: print("grid:", line, flush=True),
        )
        os.environ["X509_CERT_DIR"] = str(state.values["x509_cert_dir"])
        bench = Bench(state, args.files, args.kib, datetime.now(UTC).date() - timedelta(days=5))
        for dag_id in ("rawflow_receiver", BLOCK_DAG):
            bench.api.unpause(dag_id)
        if not args.with_keepup:
            bench.api.pause("rawflow_keepup")
        tier0_bytes, free = args.files * args.kib * 1024, shutil.disk_usage(var).free
        if tier0_bytes > free * 0.95:
            raise BenchFailure(f"the Tier-0 copy needs {tier0_bytes / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
        print(f"writing {args.files} files into the Tier-0 (untimed)", flush=True)
        bench.write_files()
        needed, free = bench.bytes_needed(), shutil.disk_usage(var).free
        if needed > free * 0.95:
            raise BenchFailure(f"needs {needed / 2**30:.1f} GiB more disk at its peak, {free / 2**30:.1f} GiB free")
        rawflow = bench.rawflow(args.timeout)
        # Printed (and saved) before the baselines, which take long at a day's volume.
        print(f"rawflow: {json.dumps(rawflow)}", flush=True)
        if args.json:
            args.json.write_text(json.dumps({"rawflow": rawflow}, indent=2))
        if args.free_space:
            bench.drop_destination_copies()
        baselines = {
            "same-urls": bench.baseline(
                args.parallel, "same-urls", args.gfal_processes, args.free_space, args.gfal_sample
            ),
            "reference": bench.baseline(args.parallel, args.baseline, args.gfal_processes, args.free_space),
        }
        print(render(args.files, args.kib, rawflow, baselines))
        if args.json:
            args.json.write_text(json.dumps({"rawflow": rawflow, "baselines": baselines}, indent=2))
        return 0
    except (BenchFailure, RawflowError, OSError) as exc:  # OSError: the API server did not answer in time
        print(f"bench_block: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        # Its Kafka producer would log a reconnect attempt a second while the grid stops: let it go first.
        bench = None
        if args.keep:
            stack.down(var, progress=lambda line: print("grid:", line, flush=True))
        else:
            stack.purge(var, progress=lambda line: print("grid:", line, flush=True))


if __name__ == "__main__":
    sys.exit(main())
