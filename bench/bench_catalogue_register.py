"""Register one day's block (14,400 files by default) into each catalogue backend and print files/s.

    .venv/bin/python bench/bench_catalogue_register.py [--files N] [--skip-rucio]

Backends: sql on PostgreSQL (RAWFLOW_TEST_PG_URL or a private instance), sql on SQLite (a temp file) and rucio
(a local Rucio 41.5.1 server from .venv-rucio on its own database). Each gets a fresh, empty catalogue; the
timed call is one ``register_files`` of the whole block at one site, then an idempotent re-registration.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from rawflow.catalogue import Catalogue, FileRecord, get_catalogue  # noqa: E402
from rawflow.grid.postgres import create_database, drop_database, postgres_admin_url  # noqa: E402
from rawflow.grid.rucio_server import start_rucio_server, stop_rucio_server  # noqa: E402
from rawflow.naming import DataType, RawFileName, block_id_for, lfn_for  # noqa: E402

DAY = date(2025, 11, 1)


def day_block(n: int) -> list[FileRecord]:
    """``n`` files of one RAW block: several runs and streams, 6 s apart, as a day at the Tier-0 looks."""
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    records = []
    for i in range(n):
        run, stream = 1000 + i // 3600, ("Physics", "Calib", "Trigger")[i % 3]
        name = RawFileName.build(
            daq="Daq",
            run_number=run,
            stream_type="Data",
            stream_name=stream,
            file_tag="v1",
            file_time=(start + timedelta(seconds=6 * i)).replace(tzinfo=None),
            file_sequence=i,
        ).name
        records.append(
            FileRecord(
                lfn=lfn_for(DataType.RAW, DAY, name),
                size=2_000_000_000 + i,
                adler32=f"{(i * 2654435761) & 0xFFFFFFFF:08x}",
                data_type=DataType.RAW,
                block_id=block_id_for(DAY),
                run_number=run,
                stream=stream,
                received_at=start + timedelta(seconds=6 * i + 1),
            )
        )
    return records


@contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[str]:
    url = create_database(admin_url, prefix)
    try:
        yield url
    finally:
        drop_database(admin_url, url)


def measure(label: str, make: Callable[[], Catalogue], records: list[FileRecord]) -> dict[str, float | str]:
    catalogue = make()
    try:
        started = time.perf_counter()
        result = catalogue.register_files(records, site="IHEP")
        first = time.perf_counter() - started
        assert len(result.added) == len(records), f"{label}: added {len(result.added)} of {len(records)}"
        started = time.perf_counter()
        again = catalogue.register_files(records, site="IHEP")
        second = time.perf_counter() - started
        assert len(again.existing) == len(records), f"{label}: re-registration was not a no-op"
        block = catalogue.get_block(DataType.RAW, block_id_for(DAY))
        assert block is not None and block.files == len(records), f"{label}: block holds {block}"
    finally:
        catalogue.close()
    return {
        "backend": label,
        "seconds": first,
        "files/s": len(records) / first,
        "re-register files/s": len(records) / second,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=14_400)
    parser.add_argument("--skip-rucio", action="store_true")
    args = parser.parse_args()
    records = day_block(args.files)
    rows = []
    with ExitStack() as stack:
        admin = stack.enter_context(postgres_admin_url())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rawflow-bench-")))
        pg_url = stack.enter_context(fresh_database(admin, "bench_sql"))
        rows.append(measure("sql/Postgres", lambda: get_catalogue("sql+" + pg_url), records))
        rows.append(measure("sql/SQLite", lambda: get_catalogue(f"sql+sqlite:///{tmp / 'catalogue.db'}"), records))
        if not args.skip_rucio:
            rucio_db = stack.enter_context(fresh_database(admin, "bench_rucio"))
            server = start_rucio_server(tmp / "rucio", rucio_db)
            stack.callback(stop_rucio_server, server)
            rows.append(measure("rucio", lambda: get_catalogue("rucio", **server.client_options()), records))
    print(f"register one block of {len(records):,} files (one call, site IHEP)")
    print(f"{'backend':<14} {'seconds':>8} {'files/s':>9} {'re-register files/s':>20}")
    for row in rows:
        print(
            f"{row['backend']:<14} {row['seconds']:>8.2f} {row['files/s']:>9,.0f} {row['re-register files/s']:>20,.0f}"
        )


if __name__ == "__main__":
    main()
