"""``make demo``: bring up the local grid and Airflow, then play a demo day of raw data through it.

The announcer writes synthetic raw files into IHEP-EOS through gfal2 and announces them on Kafka (plus a
few hostile messages that must end in quarantine). The receiver DAG registers them; today's block DAG run
replicates them to the sites, validates and archives them. With the grid's HTCondor pool, keep-up turns them
into RTRAW and ESD, which today's rtraw and esd block DAG runs replicate and validate by their own policies.
Every wait is bounded; the demo prints each block's status per site. The grid stays up: ``make down`` stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from rawflow.airflow_api import AirflowAPI
from rawflow.errors import RawflowError
from rawflow.grid import stack
from rawflow.naming import DataType, block_id_for
from rawflow.validation import SiteProgress


def announce_day(state: stack.GridState, files: int, day_id: str) -> list[str]:
    from rawflow.announcer import Announcer
    from rawflow.kafka import KafkaSettings
    from rawflow.naming import parse_block_id
    from rawflow.receiver import make_producer
    from rawflow.sites import load_sites
    from rawflow.storage import get_storage

    os.environ.setdefault("X509_CERT_DIR", str(state.values["x509_cert_dir"]))
    sites = load_sites(state.values["sites_path"])
    storage = get_storage("gfal2", bearer_token=state.secrets()["storage_token"])
    producer = make_producer(KafkaSettings(bootstrap=str(state.values["kafka_bootstrap"])))
    announcer = Announcer(storage, sites.tier0, producer, timezone=sites.timezone)  # filed as the DAQ does
    synthetic = announcer.make_files(files, day=parse_block_id(day_id), sizes=(64 * 1024, 1024 * 1024))
    announcer.write(synthetic)
    announcer.announce(synthetic)
    hostile = announcer.hostile(synthetic[0], other=synthetic[1])
    announcer.publish(hostile)
    print(f"demo: wrote {len(synthetic)} raw files into IHEP-EOS and announced them (+{len(hostile)} hostile messages)")
    return [f.lfn for f in synthetic]


def wait_registered(state: stack.GridState, day_id: str, expected: int, timeout: float) -> int:
    from rawflow.catalogue import get_catalogue

    catalogue = get_catalogue(str(state.values["catalogue_url"]))
    deadline = time.monotonic() + timeout
    count = 0
    try:
        while time.monotonic() < deadline:
            block = catalogue.get_block(DataType.RAW, day_id)
            count = block.files if block else 0
            print(f"\rdemo: {count}/{expected} files registered in block RAW-{day_id}", end="", flush=True)
            if count >= expected:
                break
            time.sleep(1)
    finally:
        catalogue.close()
        print()
    return count


def block_line(data_type: DataType, day_id: str, progress: Mapping[str, SiteProgress]) -> str:
    """One line of a block's replication status: per target site the files Processed (replicated and
    validated, or archived on tape) of those it should hold, and the Problematic ones if any."""
    parts = []
    for name, p in progress.items():
        part = f"{name} {p.processed}/{p.assigned}"
        parts.append(f"{part} ({p.problematic} problematic)" if p.problematic else part)
    return f"{data_type.value}-{day_id} processed: {'  '.join(parts) or 'no target site'}"


def block_settled(progress: Mapping[str, SiteProgress]) -> bool:
    """Every target site is done with the block: each file it should hold is Processed or Problematic."""
    return bool(progress) and all(p.pending == 0 for p in progress.values())


def wait_processed(
    state: stack.GridState, day_id: str, timeout: float, data_type: DataType = DataType.RAW, expected: int = 0
) -> bool:
    """Wait until every target site of the block reports all its files Processed (replicated/validated/on tape),
    the block holding at least ``expected`` files."""
    from rawflow import replication
    from rawflow.catalogue import get_catalogue
    from rawflow.sites import load_sites

    catalogue = get_catalogue(str(state.values["catalogue_url"]))
    sites = load_sites(state.values["sites_path"])
    deadline = time.monotonic() + timeout
    try:
        while True:
            progress = replication.block_status(catalogue, sites, data_type, day_id)
            print(f"\rdemo: {block_line(data_type, day_id, progress)}", end="", flush=True)
            block = catalogue.get_block(data_type, day_id)
            if block is not None and block.files >= expected and block_settled(progress):
                print()
                return True
            if time.monotonic() > deadline:
                print(f"\ndemo: not every site finished {data_type.value}-{day_id} within {timeout:.0f} s; see the UI")
                return False
            time.sleep(2)
    finally:
        catalogue.close()


def wait_keepup(state: stack.GridState, day_id: str, timeout: float) -> tuple[bool, int]:
    """Wait until keep-up made RTRAW and ESD for every RAW file of the day (or gave up on some), then print the
    processing status (the Processing page's numbers). Returns (done, RTRAW files made)."""
    from rawflow.monitoring import MonitoringStore
    from rawflow.processing.status import format_status, processing_status

    store = MonitoringStore(str(state.values["catalogue_url"]))
    deadline = time.monotonic() + timeout
    try:
        while True:
            status = processing_status(store.engine, days=1)
            runs = [r for r in status.runs if r.block_id == day_id]
            raw = sum(r.raw for r in runs)
            rtraw, esd = sum(r.rtraw for r in runs), sum(r.esd for r in runs)
            gave_up = sum(1 for f in status.failures if f["block_id"] == day_id and f["state"] == "problematic")
            print(f"\rdemo: keep-up of {day_id}: RTRAW {rtraw}/{raw}, ESD {esd}/{raw}, problematic {gave_up}", end="")
            done = raw > 0 and rtraw + gave_up >= raw and esd >= rtraw
            if done or time.monotonic() > deadline:
                print()
                print(format_status(status))
                return done, rtraw
            time.sleep(3)
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rawflow.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=int(os.environ.get("RAWFLOW_DEMO_FILES", "120")))
    parser.add_argument("--var", type=Path, default=None)
    parser.add_argument("--api-port", type=int, default=8080)
    args = parser.parse_args(argv)

    state = stack.up(args.var, api_port=args.api_port)
    url, user = str(state.values["airflow_url"]), str(state.values["airflow_user"])
    password = json.loads(Path(state.values["airflow_password_file"]).read_text())[user]
    api = AirflowAPI(url, user, password)
    # Keep-up needs the grid's HTCondor pool (its Connection); without one the demo shows replication only.
    keepup = bool(state.values.get("condor_config"))
    dag_ids = ["rawflow_receiver", "rawflow_block_raw"]
    if keepup:
        dag_ids += ["rawflow_keepup", "rawflow_block_rtraw", "rawflow_block_esd"]
    for dag_id in dag_ids:
        for _ in range(60):
            try:
                api.unpause(dag_id)
                break
            except RawflowError:
                time.sleep(1)  # not parsed yet
    # Today's block is today's receiving day in the policy's zone (the one today's block DAG run is for).
    from rawflow.naming import receiving_day
    from rawflow.sites import load_sites

    zone = load_sites(str(state.values["sites_path"])).timezone
    day_id = block_id_for(receiving_day(datetime.now(UTC), zone))
    lfns = announce_day(state, args.files, day_id)
    registered = wait_registered(state, day_id, len(lfns), timeout=180)
    replication_wait = float(os.environ.get("RAWFLOW_DEMO_WAIT", "300"))
    replicated = wait_processed(state, day_id, timeout=replication_wait)
    processed = True
    kinds = [DataType.RAW]
    if keepup:
        processed, made = wait_keepup(state, day_id, timeout=float(os.environ.get("RAWFLOW_DEMO_KEEPUP_WAIT", "600")))
        # RTRAW and ESD replicate by their own policies (today's rawflow_block_rtraw / _esd runs).
        for kind in (DataType.RTRAW, DataType.ESD):
            replicated = wait_processed(state, day_id, replication_wait, kind, expected=made) and replicated
            kinds.append(kind)
    else:
        print("demo: no HTCondor pool in this grid: keep-up processing not shown")
    from rawflow.cli import main as cli

    os.environ["RAWFLOW_CATALOGUE_URL"] = str(state.values["catalogue_url"])
    os.environ["RAWFLOW_SITES"] = str(state.values["sites_path"])
    for kind in kinds:
        cli(["block", "status", day_id, "--type", kind.value])
    print(
        "\n".join(
            [
                "",
                f"Rawflow demo is running. Airflow UI: {url}   login: {user} / {password}",
                f"  block RAW-{day_id}: {registered}/{len(lfns)} files registered; the rawflow_block_raw run for",
                "  today replicates them to CNAF-STORM, JINR-EOS (via CNAF), IN2P3-DCACHE (1/3) and archives to tape;",
                "  rawflow_block_rtraw and rawflow_block_esd do the same for keep-up's RTRAW and ESD by their policies.",
                "  rawflow grid status      every process, PID and endpoint",
                "  make down                stop everything",
            ]
        )
    )
    return 0 if registered >= len(lfns) and replicated and processed else 1


if __name__ == "__main__":
    raise SystemExit(main())
