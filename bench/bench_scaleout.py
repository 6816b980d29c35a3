"""Bench: scale-out, side by side in one run — receiver msgs/s with 1 vs 2 consumers, and the block workload on
LocalExecutor vs CeleryExecutor with 1 and 2 workers — and where the limit is (CPU, database, broker, storage).

    .venv/bin/python bench/bench_scaleout.py [--messages 10000] [--files 200] [--kib 4] [--skip-block]
                                             [--timeout 1800] [--json out.json]

Receiver: one Tansu broker, one private Postgres, the five loopback xrootd sites; N files written into the
Tier-0 once (untimed). For 1 and then 2 members, on fresh 4-partition topics, a fresh catalogue and a fresh
consumer group: the members (``python -m rawflow.receiver --partitions 4``, separate processes, Tier-0 check
full) join and split the partitions, then N announcements are published; timed from the first publish to the
N-th file in the catalogue.

Block: for each executor, ``rawflow grid up`` (private Postgres for the metadata DB and the catalogue in every
case, so only the executor differs; no HTCondor), then the block benchmark's workload (bench_block.Bench: N files
announced → registered → one block DAG run to four targets); replicas/s from the run's start to the last
replica good, and end to end from the first announcement.

Where the limit is: during each timed phase, the CPU seconds of every process group (receivers / Airflow
components / Postgres / Tansu / Redis / xrootd) and the machine's busy share are sampled from /proc; for the
receiver, each member's per-batch stage clock (parse, tier0 = storage, catalogue = database, produce + commit =
broker) is summed from its DEBUG log. The verdict names the resource that bounds the phase.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from confluent_kafka import Producer  # noqa: E402

from rawflow.announcer import Announcer  # noqa: E402
from rawflow.catalogue import get_catalogue  # noqa: E402
from rawflow.grid import stack  # noqa: E402
from rawflow.grid.broker import start_broker, stop_broker  # noqa: E402
from rawflow.grid.postgres import create_database, start_postgres, stop_postgres  # noqa: E402
from rawflow.grid.process import grid_processes, stop_group  # noqa: E402
from rawflow.kafka import KafkaSettings, Topics, ensure_topics, producer_config  # noqa: E402
from rawflow.naming import DataType, block_id_for  # noqa: E402
from rawflow.quarantine import Quarantine  # noqa: E402
from rawflow.storage.gfal2_storage import Gfal2Storage  # noqa: E402

PARTITIONS = 4
TICKS = os.sysconf("SC_CLK_TCK")
STAGE = re.compile(r"batch of (\d+): (.*)$")
DAY = date(2025, 11, 2)


class BenchFailure(Exception):
    """A real failure: a file lost, a run failed, a wait ran out."""


# --- CPU accounting -------------------------------------------------------------------------------------------


def _cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of each live process plus what it collected from its reaped children."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / TICKS


def _machine() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuSampler:
    """CPU seconds per role (a set of process groups and their descendants) over a phase, and the machine's
    busy share. Processes that start and end inside the phase count through their parent's cutime/cstime."""

    def __init__(self, roles: Mapping[str, Sequence[int]]) -> None:
        self.roles = {name: list(groups) for name, groups in roles.items()}
        self.started = time.monotonic()
        self.machine = _machine()
        self.before = self._now()

    def _now(self) -> dict[str, dict[int, float]]:
        found: dict[str, dict[int, float]] = {}
        for name, groups in self.roles.items():
            pids = grid_processes(None, groups)
            found[name] = {pid: _cpu_seconds([pid]) for pid in pids}
        return found

    def stop(self) -> dict[str, Any]:
        after = self._now()
        wall = time.monotonic() - self.started
        busy, total = _machine()
        cores: dict[str, float] = {}
        for name, pids in after.items():
            # Processes alive at both ends count their difference; new ones count all they used.
            seconds = sum(cpu - self.before[name].get(pid, 0.0) for pid, cpu in pids.items())
            cores[name] = max(seconds, 0.0) / wall
        return {
            "wall_s": wall,
            "machine_busy": (busy - self.machine[0]) / max(total - self.machine[1], 1),
            "cores_used": cores,
        }


def render_cpu(cpu: Mapping[str, Any]) -> str:
    parts = ", ".join(f"{name} {cores:.2f}" for name, cores in sorted(cpu["cores_used"].items(), key=lambda x: -x[1]))
    return f"machine {cpu['machine_busy'] * 100:.0f}% busy of {os.cpu_count()} cores; cores used: {parts}"


def verdict(cpu: Mapping[str, Any], stages: Mapping[str, float] | None = None) -> str:
    """The resource bounding a phase: the machine's CPU when it is (nearly) saturated, else the stage the
    consumers wait on most (storage, database, broker), else the biggest CPU user."""
    cores = dict(cpu["cores_used"])
    top = max(cores, key=lambda k: cores[k]) if cores else "?"
    if cpu["machine_busy"] >= 0.85:
        ours = sum(cores.values())
        busy = cpu["machine_busy"] * (os.cpu_count() or 1)
        shared = (
            f"; this bench's processes use {ours:.2f} of the {busy:.2f} busy cores: the rest is other load on the box"
            if ours < 0.6 * busy
            else ""
        )
        return (
            f"CPU: the machine is {cpu['machine_busy'] * 100:.0f}% busy; the biggest user is {top} "
            f"({cores[top]:.2f} cores){shared}"
        )
    if stages:
        where = {
            "storage (Tier-0 checks)": stages.get("tier0", 0.0),
            "database (catalogue + quarantine)": stages.get("catalogue", 0.0) + stages.get("quarantine", 0.0),
            "broker (produce + commit)": stages.get("produce", 0.0) + stages.get("commit", 0.0),
            "receiver CPU (parse)": stages.get("parse", 0.0),
        }
        slowest = max(where, key=lambda k: where[k])
        share = where[slowest] / max(sum(where.values()), 1e-9)
        return (
            f"{slowest}: {share * 100:.0f}% of the members' batch time, machine {cpu['machine_busy'] * 100:.0f}% busy"
        )
    return f"not CPU-bound (machine {cpu['machine_busy'] * 100:.0f}% busy); the biggest CPU user is {top}"


# --- receiver: 1 vs 2 members -------------------------------------------------------------------------------------


def _assignments(log: Path, raw_topic: str) -> set[int]:
    owned: set[int] = set()
    for line in log.read_text(errors="replace").splitlines():
        if " assigned " in line:
            owned = {int(p) for p in re.findall(re.escape(raw_topic) + r"\[(\d+)\]", line)}
    return owned


def _stages(logs: Iterable[Path]) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            match = STAGE.search(line)
            if match:
                for part in match.group(2).split():
                    stage, _, seconds = part.partition("=")
                    total[stage] += float(seconds.rstrip("s"))
    return dict(total)


def receiver_phase(
    members: int,
    *,
    bootstrap: str,
    admin_url: str,
    files: Sequence[Any],
    storage: Gfal2Storage,
    sites: Any,
    sites_file: Path,
    env: Mapping[str, str],
    work: Path,
    broker_pid: int,
    postgres_pid: int,
    xrootd_pids: Sequence[int],
    timeout: float,
) -> dict[str, Any]:
    settings = KafkaSettings(bootstrap=bootstrap, group_id=f"bench-{uuid.uuid4().hex[:8]}", partitions=PARTITIONS)
    prefix = f"s{uuid.uuid4().hex[:8]}."
    topics = Topics().with_prefix(prefix)
    ensure_topics(settings, topics)
    url = create_database(admin_url, "rawflow_bench_scale")
    Quarantine(url).create_schema()
    catalogue = get_catalogue(url)
    block_id = block_id_for(DAY)
    logs = [work / f"receiver-{members}-{i}.log" for i in range(members)]
    procs = []
    for i, log in enumerate(logs):
        argv = [
            sys.executable,
            "-m",
            "rawflow.receiver",
            *("--bootstrap", bootstrap, "--group", settings.group_id, "--member", f"m{i + 1}"),
            *("--catalogue-url", url, "--sites", str(sites_file), "--topic-prefix", prefix, "--types", "RAW"),
            *("--partitions", str(PARTITIONS), "--storage-check", "full", "--batch-size", "1000"),
            *("--session-timeout-ms", "6000", "--log-level", "DEBUG"),
        ]
        with open(log, "ab") as out:
            procs.append(
                subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=dict(env), start_new_session=True)
            )
    try:
        deadline = time.monotonic() + 60
        while True:
            owned = [_assignments(log, topics.raw_announce) for log in logs]
            if all(owned) and set().union(*owned) == set(range(PARTITIONS)) and sum(map(len, owned)) == PARTITIONS:
                break
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise BenchFailure(f"{members} member(s) never split the partitions: {owned}")
            time.sleep(0.2)
        sampler = CpuSampler(
            {
                "receivers": [p.pid for p in procs],
                "postgres": [postgres_pid],
                "tansu": [broker_pid],
                "xrootd": list(xrootd_pids),
            }
        )
        started = time.perf_counter()
        announcer = Announcer(storage, sites.tier0, Producer(producer_config(settings)), topics)
        announcer.announce(files)
        deadline = time.monotonic() + timeout
        while (count := len(catalogue.query_files(Block=block_id, Type=DataType.RAW.value))) < len(files):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise BenchFailure(f"{members} member(s): {count} of {len(files)} registered")
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        cpu = sampler.stop()
        if count != len(files):
            raise BenchFailure(f"{members} member(s): {count} registered, {len(files)} announced")
    finally:
        for proc in procs:
            stop_group(proc.pid)
        catalogue.close()
    stages = _stages(logs)
    return {
        "members": members,
        "messages": len(files),
        "seconds": seconds,
        "msg_s": len(files) / seconds,
        "cpu": cpu,
        "stages_s": stages,
        "limit": verdict(cpu, stages),
    }


def receiver_bench(messages: int, timeout: float) -> list[dict[str, Any]]:
    import yaml

    from rawflow.grid.xrootd import start_sites
    from rawflow.sites import default_sites_path, load_sites

    work = Path(tempfile.mkdtemp(prefix="rawflow-bench-scale-"))
    work.chmod(0o755)
    results = []
    broker = start_broker(work / "kafka", partitions=PARTITIONS)
    pg = start_postgres()
    local = start_sites(load_sites(default_sites_path()), work / "sites")
    try:
        os.environ.update(local.client_env)
        storage = Gfal2Storage()
        sites = local.sites_config
        sites_file = work / "sites.yaml"
        sites_file.write_text(yaml.safe_dump(sites.to_raw()))
        announcer = Announcer(storage, sites.tier0, Producer(producer_config(KafkaSettings(broker.bootstrap))))
        started = time.perf_counter()
        files = announcer.make_files(messages, day=DAY, run=7, sizes=(1024, 4096))
        announcer.write(files, parallel=16)
        print(f"wrote {messages} files into the Tier-0 in {time.perf_counter() - started:.1f} s (untimed)", flush=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), *sys.path])}
        for members in (1, 2):
            result = receiver_phase(
                members,
                bootstrap=broker.bootstrap,
                admin_url=pg.url,
                files=files,
                storage=storage,
                sites=sites,
                sites_file=sites_file,
                env=env,
                work=work,
                broker_pid=broker.daemon.pid,
                postgres_pid=pg.daemon.pid,
                xrootd_pids=[d.pid for d in local.daemons.values()],
                timeout=timeout,
            )
            results.append(result)
            print(
                f"receiver, {members} member(s) on {PARTITIONS} partitions: {result['msg_s']:,.0f} msg/s "
                f"({messages} in {result['seconds']:.1f} s); {render_cpu(result['cpu'])}",
                flush=True,
            )
    finally:
        local.stop()
        stop_postgres(pg)
        stop_broker(broker)
        shutil.rmtree(work, ignore_errors=True)
    return results


# --- block workload: LocalExecutor vs Celery with 1 and 2 workers --------------------------------------------------


def block_phase(executor: str, workers: int, files: int, kib: int, timeout: float) -> dict[str, Any]:
    from bench_block import BLOCK_DAG, Bench

    var = Path(tempfile.mkdtemp(prefix="rawflow-bench-scale-grid-"))
    label = "LocalExecutor" if executor == "local" else f"Celery, {workers} worker(s)"
    print(f"--- block workload on {label}: grid up", flush=True)
    try:
        state = stack.up(
            var,
            api_port=None,
            postgres="private",
            condor=False,
            executor=executor,
            workers=workers,
            progress=lambda line: print("grid:", line, flush=True),
        )
        os.environ["X509_CERT_DIR"] = str(state.values["x509_cert_dir"])
        bench = Bench(state, files, kib, datetime.now(UTC).date() - timedelta(days=5))
        for dag_id in ("rawflow_receiver", BLOCK_DAG):
            deadline = time.monotonic() + 120
            while True:
                try:
                    bench.api.unpause(dag_id)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
        bench.announcer.write(bench.files)
        groups: dict[str, list[int]] = defaultdict(list)
        for name, info in state.components.items():
            role = (
                "airflow"
                if name in ("airflow", "scheduler", "dag-processor", "triggerer", "api-server")
                else "celery-workers"
                if name.startswith("celery-worker")
                else "xrootd"
                if name.startswith("xrootd")
                else name
            )
            groups[role].append(int(info["pid"]))
        sampler = CpuSampler({k: v for k, v in groups.items() if k not in ("smtp-sink", "tape-migrator")})
        result = bench.rawflow(timeout)
        cpu = sampler.stop()
    finally:
        stack.down(var, progress=lambda line: None)
        shutil.rmtree(var, ignore_errors=True)
    replicas = sum(site["replicas"] for site in result["sites"].values())
    return {
        "executor": label,
        "files": files,
        "replicas": replicas,
        "replicas_s": replicas / result["replication_s"],
        "replication_s": result["replication_s"],
        "end_to_end_s": result["end_to_end_s"],
        "registration_s": result["registration_s"],
        "cpu": cpu,
        "limit": verdict(cpu),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=10000, help="announcements per receiver phase")
    parser.add_argument("--files", type=int, default=200, help="files in the block workload")
    parser.add_argument("--kib", type=int, default=4, help="file size in KiB for the block workload")
    parser.add_argument("--skip-block", action="store_true", help="the receiver comparison only")
    parser.add_argument("--timeout", type=float, default=1800, help="bound on every wait, seconds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    os.environ.setdefault("GFAL_PYTHONBIN", "/usr/bin/python3")
    results: dict[str, Any] = {"cores": os.cpu_count()}
    try:
        results["receiver"] = receiver_bench(args.messages, args.timeout)
        if not args.skip_block:
            results["block"] = [
                block_phase(executor, workers, args.files, args.kib, args.timeout)
                for executor, workers in (("local", 0), ("celery", 1), ("celery", 2))
            ]
    except BenchFailure as exc:
        print(f"bench_scaleout: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"\n=== scale-out on {os.cpu_count()} cores, side by side ===")
    for r in results["receiver"]:
        print(f"receiver  {r['members']} member(s): {r['msg_s']:8,.0f} msg/s   limit: {r['limit']}")
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(r["stages_s"].items(), key=lambda x: -x[1]))
        print(f"          batch time summed over members: {stages}")
        print(f"          {render_cpu(r['cpu'])}")
    one, two = results["receiver"][0]["msg_s"], results["receiver"][1]["msg_s"]
    print(f"receiver  speed-up with 2 members: x{two / one:.2f}")
    for b in results.get("block", []):
        print(
            f"block     {b['executor']:22}: {b['replicas_s']:6.2f} replicas/s ({b['replicas']} in "
            f"{b['replication_s']:.1f} s), end to end {b['end_to_end_s']:.1f} s   limit: {b['limit']}"
        )
        print(f"          {render_cpu(b['cpu'])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
