"""Bench: rawflow's validation adler32 path against bare zlib.adler32, on one core, side by side.

    .venv/bin/python bench/bench_adler32.py                 # 256 MiB in memory + a page-cached file
    .venv/bin/python bench/bench_adler32.py --mib 1024 --xrootd   # also read back through a local xrootd site

Rows: zlib.adler32 over the whole buffer in one call (the ceiling); ``validation.adler32_chunks`` over the
8 MiB pieces a read-back yields; ``checksum.adler32_file`` over a file in the page cache; with ``--xrootd``,
``validation.read_back_adler32`` from a real xrootd server through gfal2 (network and server included).
Target: the in-process paths reach at least 80 % of zlib's throughput.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from rawflow.checksum import adler32_file, format_adler32
from rawflow.validation import READ_BUFFER, adler32_chunks

TARGET = 0.80


def pin_one_core() -> str:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError):
        return "not pinned (no sched_setaffinity)"


def best_rate(fn: Callable[[], str], nbytes: int, repeats: int) -> tuple[float, str]:
    """Best-of-N throughput in MB/s (10^6 bytes), and the checksum it produced."""
    times: list[float] = []
    value = ""
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return nbytes / min(times) / 1e6, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mib", type=int, default=256, help="data size in MiB (default 256)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--xrootd", action="store_true", help="also read back through a local xrootd site")
    args = parser.parse_args(argv)
    pinned = pin_one_core()
    nbytes = args.mib * 1024 * 1024
    data = os.urandom(nbytes)
    view = memoryview(data)
    pieces = [view[i : i + READ_BUFFER] for i in range(0, nbytes, READ_BUFFER)]

    rows: list[tuple[str, float, str]] = []
    zlib_rate, reference = best_rate(lambda: format_adler32(zlib.adler32(data)), nbytes, args.repeats)
    rows.append(("zlib.adler32, one call (ceiling)", zlib_rate, reference))
    rate, value = best_rate(lambda: adler32_chunks(pieces), nbytes, args.repeats)
    rows.append((f"validation.adler32_chunks ({READ_BUFFER >> 20} MiB pieces)", rate, value))
    with tempfile.TemporaryDirectory(prefix="rawflow-bench-adler32-") as tmp:
        path = Path(tmp) / "data.bin"
        path.write_bytes(data)
        adler32_file(path)  # warm the page cache
        rate, value = best_rate(lambda: adler32_file(path), nbytes, args.repeats)
        rows.append(("checksum.adler32_file (page cache)", rate, value))
        if args.xrootd:
            rows.append(xrootd_row(path, nbytes, args.repeats))

    print(f"adler32 over {args.mib} MiB, best of {args.repeats}, {pinned}")
    print(f"{'path':<52} {'MB/s':>9} {'vs zlib':>8}  adler32")
    failed = False
    for name, rate, value in rows:
        share = rate / zlib_rate
        print(f"{name:<52} {rate:>9.0f} {share:>7.0%}  {value}")
        if value != reference:
            print(f"  !! {name} computed {value}, expected {reference}")
            failed = True
    in_process = [rate / zlib_rate for _name, rate, _value in rows[1:3]]
    verdict = min(in_process) >= TARGET
    print(f"target: in-process validation paths ≥ {TARGET:.0%} of zlib → {'PASS' if verdict else 'FAIL'}")
    print(f"(median in-process share {statistics.median(in_process):.0%})")
    return 0 if verdict and not failed else 1


def xrootd_row(path: Path, nbytes: int, repeats: int) -> tuple[str, float, str]:
    """Upload the data to a local xrootd site and time the read-back adler32 through gfal2."""
    from rawflow.grid.xrootd import start_sites
    from rawflow.sites import default_sites_path, load_sites
    from rawflow.storage import CopyRequest, get_storage
    from rawflow.validation import read_back_adler32

    state = Path(tempfile.mkdtemp(prefix="rawflow-bench-xrd-", dir="/tmp"))
    state.chmod(0o755)
    sites = load_sites(default_sites_path())
    local = start_sites(sites, state)
    try:
        for key, value in local.client_env.items():
            os.environ.setdefault(key, value)
        storage = get_storage("gfal2")
        tier0 = local.sites_config.tier0
        url = tier0.pfn("/juno/raw/2025/1101/bench-adler32.dat")
        storage.copy([CopyRequest(f"file://{path}", url)], tpc="never")
        rate, value = best_rate(lambda: read_back_adler32(storage, url), nbytes, repeats)
        return ("validation.read_back_adler32 (root:// via gfal2)", rate, value)
    finally:
        local.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
