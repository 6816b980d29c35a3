"""Speed of the RAW generator and the keep-up payloads; the figures in docs/raw-format.md.

    .venv/bin/python bench/bench_payloads.py [--small 14400] [--big 3]

Times: generating N × 4 KiB RAW files the way the announcer does (names, content, adler32); generating one
16 MiB file; raw2rtraw and rec in process per file (4 KiB and 16 MiB); and ``python -m rawflow.payloads
raw2rtraw`` as a job runs it (interpreter start and imports included). Prints CPU and wall time: this host
is shared, so wall time alone overstates (cpu includes the child processes).
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from rawflow.announcer import Announcer  # noqa: E402
from rawflow.payloads import raw2rtraw, rec  # noqa: E402
from rawflow.payloads.rawformat import decode, synthesize  # noqa: E402
from rawflow.sites import Site  # noqa: E402

START_NS = 1_790_000_000 * 1_000_000_000
TIER0 = Site(name="IHEP-EOS", role="disk", url_prefix="root://127.0.0.1:1094//eos/ihep", tier0=True)


def cpu() -> float:
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def timed(label: str, count: int, action: Callable[[], object]) -> None:
    wall, used = time.perf_counter(), cpu()
    action()
    wall, used = time.perf_counter() - wall, cpu() - used
    print(f"{label:<48} {count / wall:9.1f} files/s  wall {wall:7.2f} s  cpu {used:7.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=14_400, help="4 KiB files to generate (default 14400)")
    parser.add_argument("--big", type=int, default=3, help="16 MiB files to convert (default 3)")
    args = parser.parse_args()
    announcer = Announcer(None, TIER0, None)  # type: ignore[arg-type]  # make_files touches neither
    announcer.make_files(1)  # the event pool, once per process
    timed(
        f"announcer: {args.small} × 4 KiB RAW files",
        args.small,
        lambda: announcer.make_files(args.small, day=date(2026, 12, 2), sizes=(4096, 4096), rng=random.Random(1)),
    )
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for size, count in ((4096, 40), (16 << 20, args.big)):
            files = []
            for sequence in range(count):
                path = work / f"f{size}.{sequence}.dat"
                data, _truth = synthesize(run=1, stream="Physics", sequence=sequence, start_time_ns=START_NS, size=size)
                path.write_bytes(data)
                files.append(path)
            events = decode(files[0].read_bytes()).events.count
            label = f"{size // 1024} KiB RAW ({events} events)"
            run_payloads(label, size, files, work)


def run_payloads(label: str, size: int, files: list[Path], work: Path) -> None:
    def generate() -> None:
        synthesize(run=1, stream="S", sequence=9, start_time_ns=START_NS, size=size)

    def convert() -> None:
        for f in files:
            raw2rtraw.run(f, f.with_suffix(".rtraw"))

    def reconstruct() -> None:
        for f in files:
            rec.run(f.with_suffix(".rtraw"), f.with_suffix(".esd"))

    def command_line() -> None:
        command = [sys.executable, "-m", "rawflow.payloads", "raw2rtraw"]
        for f in files[:3]:
            subprocess.run(
                [*command, str(f), str(f.with_suffix(".cli"))],
                check=True,
                capture_output=True,
                env={"PYTHONPATH": str(ROOT / "include")},
            )

    timed(f"synthesize: {label}", 1, generate)
    raw2rtraw.run(files[0], work / "warm.rtraw")
    timed(f"raw2rtraw in process: {label}", len(files), convert)
    timed(f"rec in process: {label}", len(files), reconstruct)
    timed(f"python -m rawflow.payloads raw2rtraw: {label}", min(len(files), 3), command_line)


if __name__ == "__main__":
    main()
