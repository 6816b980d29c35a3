"""Start, readiness-check and stop local daemons by PID, each in its own process group.

Every daemon started inside :func:`grid_marker` carries ``RAWFLOW_GRID_ID=<id>`` in its environment, and so
does everything it starts (Airflow task supervisors and their children, the ``xrdcp --server`` TPC helpers
xrootd spawns), even after they leave the daemon's process group with ``setsid``. :func:`stop_marked` finds
them through ``/proc/<pid>/environ`` and stops them: ``grid down`` leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rawflow.errors import TransientError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0): reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


GRID_MARKER = "RAWFLOW_GRID_ID"
_marker: str | None = None


@contextlib.contextmanager
def grid_marker(grid_id: str) -> Iterator[None]:
    """Daemons started inside carry ``RAWFLOW_GRID_ID=grid_id`` (this process's own environment is untouched)."""
    global _marker
    previous, _marker = _marker, grid_id
    try:
        yield
    finally:
        _marker = previous


def _with_marker(env: Mapping[str, str] | None) -> dict[str, str] | None:
    if _marker is None:
        return dict(env) if env is not None else None
    return {**(env if env is not None else os.environ), GRID_MARKER: _marker}


def marked_pids(grid_id: str) -> list[int]:
    """Live processes whose environment carries ``RAWFLOW_GRID_ID=grid_id`` (never this process)."""
    return pids_with_env(GRID_MARKER, grid_id)


def pids_with_env(name: str, value: str) -> list[int]:
    """Live processes whose environment carries ``name=value`` (never this process): what a daemon started,
    even the helpers that left its process group and session (Erlang's ``epmd -daemon``)."""
    wanted = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if wanted in environ.split(b"\0") and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def _proc_table() -> dict[int, tuple[int, int, int, str]]:
    """pid → (ppid, pgid, start time, state) of every process visible in /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields[0] = state, [1] = ppid, [2] = pgrp, [19] = start time (field 22 of stat)
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[19]), fields[0])
    return table


def started_at(pids: Iterable[int]) -> dict[int, int]:
    """pid → start time of those of ``pids`` still alive (what :func:`stop_processes` takes)."""
    table = _proc_table()
    return {pid: table[pid][2] for pid in pids if pid in table and table[pid][3] != "Z"}


def grid_processes(grid_id: str | None, groups: Iterable[int] = ()) -> dict[int, int]:
    """pid → start time of every live process of a grid: those carrying its marker, those in its recorded
    process groups, and every descendant of either (a process that rewrote its environment area with
    setproctitle, like Airflow's task supervisors, is still found as a descendant)."""
    table = _proc_table()
    wanted_groups = set(groups)
    roots = {pid for pid, (_, pgid, _, state) in table.items() if pgid in wanted_groups and state != "Z"}
    if grid_id:
        roots |= set(marked_pids(grid_id))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in found or pid == os.getpid():
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return {pid: table[pid][2] for pid in found if pid in table and table[pid][3] != "Z"}


def stop_processes(processes: Mapping[int, int], *, timeout: float = 10.0) -> list[int]:
    """SIGTERM each pid (still the same process: its start time matches), SIGKILL what is left after
    ``timeout``; returns the pids that were still alive."""

    def alive() -> list[int]:
        table = _proc_table()
        return [
            pid
            for pid, started in processes.items()
            if pid in table and table[pid][2] == started and table[pid][3] != "Z" and pid_alive(pid)
        ]

    live = alive()
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while (left := alive()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return sorted(live)


def stop_marked(grid_id: str, *, timeout: float = 10.0) -> list[int]:
    """Stop every process still carrying the grid's marker (or descending from one), in a few passes: a
    parent may spawn while it dies. Returns the pids stopped."""
    stopped: set[int] = set()
    for _ in range(3):
        processes = grid_processes(grid_id)
        if not processes:
            break
        stopped |= set(stop_processes(processes, timeout=timeout))
    return sorted(stopped)


@dataclass(frozen=True, slots=True)
class Daemon:
    """A started daemon: its name, PID (= its process group id) and log file."""

    name: str
    pid: int
    log: str

    def alive(self) -> bool:
        return pid_alive(self.pid)


def start_daemon(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready: Callable[[], bool],
    timeout: float = 30.0,
) -> Daemon:
    """Start ``argv`` in a new session (its own process group), wait until ``ready()`` is true.

    Raises :class:`TransientError` with the log's tail if it dies or is not ready in time.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_with_marker(env),
            cwd=cwd,
            start_new_session=True,
        )
    daemon = Daemon(name=name, pid=proc.pid, log=str(log))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TransientError(f"{name} exited with {proc.returncode} while starting: {tail(log)}")
        if ready():
            return daemon
        time.sleep(0.05)
    stop_group(daemon.pid)
    raise TransientError(f"{name} not ready after {timeout:.0f} s: {tail(log)}")


def stop_group(pid: int, *, timeout: float = 10.0) -> bool:
    """SIGTERM the process group ``pid`` leads, SIGKILL what is left after ``timeout``. True if it was running."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    except PermissionError as exc:  # pragma: no cover - we run as the owner
        if exc.errno != errno.EPERM:
            raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.05)
    return True


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process still in the group."""
    with contextlib.suppress(ChildProcessError):
        while True:
            done, _ = os.waitpid(-pgid, os.WNOHANG)
            if done == 0:
                break
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields[0] = state, fields[2] = pgrp
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
