"""Child process for one bulk gfal2 copy: JSON job on stdin, JSON results on stdout.

It exists so that a gfal2 crash (python3-gfal2 segfaults when several files of one bulk copy fail) kills
this child and not the Airflow worker; :class:`rawflow.transfer.engine.CopyEngine` starts it and splits the
batch when it dies. The job may carry credentials, which is why it arrives on stdin.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rawflow.storage.base import CopyRequest
from rawflow.transfer.engine import StorageSpec, results_to_json


def run(job: dict[str, Any]) -> list[dict[str, Any]]:
    spec = StorageSpec(str(job["storage"]["factory"]), dict(job["storage"].get("options", {})))
    requests = [CopyRequest(r["source"], r["destination"], None, r.get("size")) for r in job["requests"]]
    storage = spec.build()
    results = storage.copy(requests, tpc=str(job["tpc"]), parallel=int(job["parallel"]), overwrite=False)
    return results_to_json(results)


def main() -> int:
    job = json.load(sys.stdin)
    json.dump(run(job), sys.stdout)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
