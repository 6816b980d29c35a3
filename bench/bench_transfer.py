"""Bench: rawflow's replicate_chunk against plain ``xrdcp`` and ``gfal-copy`` on the same files, side by side.

    .venv/bin/python bench/bench_transfer.py                          # CI size: 8 × 16 MiB, 300 × 64 KiB
    .venv/bin/python bench/bench_transfer.py --files 40 --mib 512 --small 14400   # the full-size run

Large files: N × S MiB from IHEP-EOS to three sites (IN2P3, JINR and CNAF's root door, all root://), through
``replication.replicate_chunk`` (gfal2 backend: planning's chunks, catalogue states, adler32 of both ends),
then ``xrdcp --tpc only --parallel P --cksum adler32:source`` and ``gfal-copy --from-file -K ADLER32`` per site.
Small files: M × K KiB to one site, reporting ms per file and rawflow's orchestration overhead against
``xrdcp``: as third-party copies and streamed (``stream_below``). Everything runs on real loopback xrootd
servers started for the bench; nothing is left running.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from rawflow import replication
from rawflow.catalogue import Catalogue, FileRecord, ReplicaState, get_catalogue
from rawflow.grid.xrootd import LocalSites, start_sites
from rawflow.naming import DataType, RawFileName, block_id_for, lfn_for
from rawflow.planning import Chunk, ChunkKind, ChunkLimits, PlannedFile, split_evenly
from rawflow.sites import SitesConfig, default_sites_path, load_sites
from rawflow.storage.gfal2_storage import Gfal2Storage
from rawflow.transfer.gfal2_tool import Gfal2Transfertool

T0 = "IHEP-EOS"
DESTINATIONS = ("IN2P3-DCACHE", "JINR-EOS", "CNAF-STORM")


@dataclass
class Row:
    method: str
    files: int
    nbytes: int
    seconds: float

    def render(self, baseline: float | None = None) -> str:
        rate = self.nbytes / self.seconds / 1e6 if self.seconds else float("inf")
        per_file = self.seconds / self.files * 1000 if self.files else 0.0
        extra = f"{(self.seconds - baseline) / self.files * 1000:+9.1f}" if baseline is not None else " " * 9
        return f"{self.method:<46} {self.files:>6} {self.nbytes / 2**20:>9.0f} {self.seconds:>9.2f} {rate:>8.0f} {per_file:>9.1f} {extra}"


HEADER = f"{'method':<46} {'files':>6} {'MiB':>9} {'seconds':>9} {'MB/s':>8} {'ms/file':>9} {'vs xrdcp':>9}  (ms/file over xrdcp in the same mode)"


def bench_sites(local: LocalSites) -> SitesConfig:
    """The policy with every destination on its root:// door and no routes, so every tool copies the same way."""
    raw = local.sites_config.to_raw()
    for name, entry in raw["sites"].items():
        entry.pop("via", None)
        entry["url_prefix"] = local.doors[name]["root"]
        if name in DESTINATIONS:
            entry["share"] = "1"
    from rawflow.sites import validate_sites

    return validate_sites(raw, source="<bench>")


def seed(
    local: LocalSites, sites: SitesConfig, catalogue: Catalogue, count: int, size: int, tag: int
) -> list[FileRecord]:
    """Write files straight into the tier-0's disk (setup, not measured) and register them."""
    day = date(2050, 1, 1) + timedelta(days=tag)
    layout = local.layouts[T0]
    owner = pwd.getpwnam("xrootd") if os.geteuid() == 0 else None
    block = os.urandom(size + 1024)
    records: list[FileRecord] = []
    for i in range(count):
        name = RawFileName.build(
            daq="Bench",
            run_number=tag,
            stream_type="Phy",
            stream_name="Main",
            file_tag="B",
            file_time=datetime(day.year, day.month, day.day) + timedelta(seconds=i),
            file_sequence=i,
        ).name
        lfn = lfn_for(DataType.RAW, day, name)
        data = block[i % 1024 : i % 1024 + size]
        path = layout.data_dir / (layout.export + lfn).lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        records.append(
            FileRecord(
                lfn,
                size,
                f"{zlib.adler32(data) & 0xFFFFFFFF:08x}",
                DataType.RAW,
                block_id_for(day),
                tag,
                "Main",
                datetime.now(UTC),
            )
        )
    if owner is not None:
        for directory, _dirs, files in os.walk(layout.data_dir):
            os.chown(directory, owner.pw_uid, owner.pw_gid)
            for f in files:
                os.chown(os.path.join(directory, f), owner.pw_uid, owner.pw_gid)
    catalogue.register_files(records, site=T0, state=ReplicaState.VALIDATED)
    return records


def clear(local: LocalSites, site: str, records: Sequence[FileRecord]) -> None:
    layout = local.layouts[site]
    top = layout.data_dir / (layout.export + "/juno").lstrip("/")
    shutil.rmtree(top, ignore_errors=True)
    top.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("xrootd")
        for path in (top, top.parent):
            os.chown(path, owner.pw_uid, owner.pw_gid)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rawflow_copy(
    catalogue: Catalogue,
    sites: SitesConfig,
    storage: Gfal2Storage,
    records: Sequence[FileRecord],
    destinations: Sequence[str],
    tool: Gfal2Transfertool,
) -> None:
    limits = ChunkLimits.for_budget(len(destinations) + 1)
    for site in destinations:
        planned = [PlannedFile(r.lfn, r.size, r.adler32, (T0,)) for r in records]
        for index, part in enumerate(split_evenly(planned, limits)):
            chunk = Chunk("RAW", records[0].block_id, site, ChunkKind.REPLICATE, index, part)
            result = replication.replicate_chunk(
                chunk, catalogue=catalogue, sites=sites, transfertool=tool, storage=storage
            )
            if result.failed:
                raise SystemExit(f"rawflow failed {len(result.failed)} files: {next(iter(result.failed.values()))}")


def run_tool(argv: Sequence[str], env: dict[str, str]) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-800:]}")


def xrdcp_copy(
    sites: SitesConfig,
    records: Sequence[FileRecord],
    destinations: Sequence[str],
    parallel: int,
    env: dict[str, str],
    tpc: bool,
) -> None:
    directory = records[0].lfn.rsplit("/", 1)[0]
    sources = [sites[T0].pfn(r.lfn) for r in records]
    for site in destinations:
        target = sites[site].pfn(directory) + "/"
        mode = ["--tpc", "only"] if tpc else []
        run_tool(
            ["xrdcp", "--silent", "--parallel", str(parallel), *mode, "--cksum", "adler32:source", *sources, target],
            env,
        )


def gfal_copy(
    sites: SitesConfig, records: Sequence[FileRecord], destinations: Sequence[str], env: dict[str, str], workdir: Path
) -> None:
    directory = records[0].lfn.rsplit("/", 1)[0]
    listing = workdir / "sources.txt"
    listing.write_text("".join(sites[T0].pfn(r.lfn) + "\n" for r in records))
    for site in destinations:
        run_tool(["gfal-copy", "-p", "-K", "ADLER32", "--from-file", str(listing), sites[site].pfn(directory)], env)


def verify(
    storage: Gfal2Storage, sites: SitesConfig, records: Sequence[FileRecord], destinations: Sequence[str]
) -> None:
    """Every method must really have produced every file, byte-exact (checked on a sample)."""
    sample = list(records[:: max(1, len(records) // 20)])
    for site in destinations:
        for r in sample:
            got = storage.checksum(sites[site].pfn(r.lfn))
            if got != r.adler32:
                raise SystemExit(f"{site}: {r.lfn} has adler32 {got}, expected {r.adler32}")


def compare(
    title: str,
    local: LocalSites,
    sites: SitesConfig,
    catalogue: Catalogue,
    storage: Gfal2Storage,
    records: Sequence[FileRecord],
    destinations: Sequence[str],
    args: argparse.Namespace,
    workdir: Path,
    stream_below: int | None = None,
) -> None:
    env = {**os.environ, **local.client_env, "GFAL_PYTHONBIN": "/usr/bin/python3"}
    nbytes = sum(r.size for r in records) * len(destinations)
    files = len(records) * len(destinations)
    rows: list[Row] = []

    def reset() -> None:
        for site in destinations:
            clear(local, site, records)
            storage.mkdir_p(sites[site].pfn(records[0].lfn.rsplit("/", 1)[0]))  # xrdcp wants the directory
            catalogue.set_replica_state([r.lfn for r in records], site, ReplicaState.REGISTERED)

    methods: list[tuple[str, Callable[[], object]]] = [
        (
            "xrdcp --tpc only --cksum adler32:source",
            lambda: xrdcp_copy(sites, records, destinations, args.parallel, env, True),
        ),
        (
            "rawflow replicate_chunk (gfal2, TPC)",
            lambda: rawflow_copy(
                catalogue, sites, storage, records, destinations, Gfal2Transfertool(parallel=args.parallel)
            ),
        ),
    ]
    if stream_below is not None:
        methods += [
            (
                "xrdcp streamed --cksum adler32:source",
                lambda: xrdcp_copy(sites, records, destinations, args.parallel, env, False),
            ),
            (
                "rawflow replicate_chunk (gfal2, streamed)",
                lambda: rawflow_copy(
                    catalogue,
                    sites,
                    storage,
                    records,
                    destinations,
                    Gfal2Transfertool(parallel=args.parallel, stream_below=stream_below),
                ),
            ),
        ]
    if not args.skip_gfal_copy:
        methods.append(
            ("gfal-copy --from-file -K ADLER32", lambda: gfal_copy(sites, records, destinations, env, workdir))
        )
    for name, method in methods:
        reset()
        seconds = timed(method)
        verify(storage, sites, records, destinations)
        rows.append(Row(name, files, nbytes, seconds))
    rerun = timed(
        lambda: rawflow_copy(
            catalogue, sites, storage, records, destinations, Gfal2Transfertool(parallel=args.parallel)
        )
    )
    rows.append(Row("rawflow re-run (all present: 0 bytes moved)", files, 0, rerun))

    # Each rawflow row against xrdcp in the same mode (third-party or streamed).
    xrdcp = {
        "TPC": rows[0].seconds,
        "streamed": next((r.seconds for r in rows if r.method.startswith("xrdcp streamed")), 0.0),
    }
    print(f"\n{title}: {len(records)} files × {records[0].size / 2**20:.3g} MiB → {', '.join(destinations)}")
    print(HEADER)
    for row in rows:
        baseline = xrdcp["streamed"] if "streamed" in row.method else xrdcp["TPC"]
        print(row.render(baseline if row.nbytes else None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--files", type=int, default=8, help="large files (default 8; full run: 40)")
    parser.add_argument("--mib", type=int, default=16, help="large file size in MiB (default 16; full run: 512)")
    parser.add_argument("--small", type=int, default=300, help="small files (default 300; full run: 14400)")
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--small-sites", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--parallel", type=int, default=20, help="concurrent copies per tool (xrootd TPC slots: 40)")
    parser.add_argument("--skip-gfal-copy", action="store_true", help="gfal-copy runs ~80 ms per file")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the state directory (server logs) afterwards")
    args = parser.parse_args(argv)

    state = Path(tempfile.mkdtemp(prefix="rawflow-bench-transfer-", dir="/tmp"))
    state.chmod(0o755)
    local = start_sites(load_sites(default_sites_path()), state / "grid")
    try:
        os.environ.update(local.client_env)
        sites = bench_sites(local)
        catalogue = get_catalogue(f"sqlite:///{state / 'catalogue.db'}")
        storage = Gfal2Storage(timeout=600)
        print(f"bench_transfer: {os.cpu_count()} cores, xrootd sites on loopback, parallel {args.parallel}")
        if not args.skip_large:
            records = seed(local, sites, catalogue, args.files, args.mib * 2**20, tag=1)
            compare("large files", local, sites, catalogue, storage, records, DESTINATIONS, args, state)
        if not args.skip_small:
            records = seed(local, sites, catalogue, args.small, args.small_kib * 1024, tag=2)
            small_sites = DESTINATIONS[: args.small_sites]
            compare(
                "many small files",
                local,
                sites,
                catalogue,
                storage,
                records,
                small_sites,
                args,
                state,
                stream_below=args.small_kib * 1024 + 1,
            )
        catalogue.close()
    finally:
        local.stop()
        if args.keep:
            print(f"state kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
