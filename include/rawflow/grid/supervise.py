"""Keep one process running: ``python -m rawflow.grid.supervise [--max-restarts N] -- ARGV...``.

The grid's own supervisor for a daemon that may die on its own (Airflow 3.3's scheduler can die on a backfill
race): it restarts the child after it exits, with a growing delay, and gives up after ``--max-restarts``
restarts within ten minutes (a crash loop is a real failure, not something to hide). SIGTERM/SIGINT stop the
child, then the supervisor. Both run in the process group ``start_daemon`` made, so ``grid down`` stops them
together. A production install uses systemd's ``Restart=always`` instead (deploy/systemd/).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections import deque
from types import FrameType

WINDOW_SECONDS = 600.0


def restart_delay(recent_restarts: int) -> float:
    """Seconds to wait before the next start: 1, 2, 4, … capped at 30."""
    return float(min(30, 2 ** max(0, recent_restarts - 1)))


RESTART_LINE = "; restarting in "


def restart_count(log_text: str) -> int:
    """How many times the supervisor restarted its child, read from the log it shares with the child."""
    return sum(1 for line in log_text.splitlines() if line.startswith("supervise: ") and RESTART_LINE in line)


def supervise(argv: list[str], *, max_restarts: int) -> int:
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts: deque[float] = deque()
    while True:
        child = subprocess.Popen(argv)
        code = child.wait()
        if stopping:
            return code
        now = time.monotonic()
        restarts.append(now)
        while restarts and now - restarts[0] > WINDOW_SECONDS:
            restarts.popleft()
        if len(restarts) > max_restarts:
            print(
                f"supervise: {argv[0]!r} exited {len(restarts)} times in {WINDOW_SECONDS:.0f} s; giving up", flush=True
            )
            return code or 1
        delay = restart_delay(len(restarts))
        print(f"supervise: {argv[0]!r} exited with {code}{RESTART_LINE}{delay:.0f} s", flush=True)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not stopping:
            time.sleep(0.2)
        if stopping:
            return code


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rawflow.grid.supervise")
    parser.add_argument("--max-restarts", type=int, default=10)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    opts = parser.parse_args(args)
    argv = opts.argv[1:] if opts.argv[:1] == ["--"] else opts.argv
    if not argv:
        parser.error("name the command to supervise after --")
    return supervise(argv, max_restarts=opts.max_restarts)


if __name__ == "__main__":
    sys.exit(main())
