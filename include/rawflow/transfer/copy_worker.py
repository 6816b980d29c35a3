"""Child process for one bulk gfal2 copy: JSON job on stdin, JSON results on stdout.

It exists so that a gfal2 crash (python3-gfal2 segfaults when several files of one bulk copy fail) kills
this child and not the Airflow worker; :class:`rawflow.transfer.engine.CopyEngine` starts it and splits the
batch when it dies. It is the only crash boundary: the storage inside copies in this process (no grandchild),
and does not compare checksums (the engine does, once per replica). The job may carry credentials, which is
why it arrives on stdin.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rawflow.storage.base import CopyRequest
from rawflow.storage.gfal2_storage import skip_ca_bundle_reload
from rawflow.transfer.engine import DEFAULT_STORAGE_FACTORY, StorageSpec, results_to_json


def run(job: dict[str, Any]) -> list[dict[str, Any]]:
    options = dict(job["storage"].get("options", {}))
    if job["storage"]["factory"] == DEFAULT_STORAGE_FACTORY:
        options["isolate_bulk"] = False  # this process is the crash boundary
    spec = StorageSpec(str(job["storage"]["factory"]), options)
    requests = [CopyRequest(r["source"], r["destination"], None, r.get("size")) for r in job["requests"]]
    storage = spec.build()
    results = storage.copy(
        requests,
        tpc=str(job["tpc"]),
        parallel=int(job["parallel"]),
        overwrite=False,
        verify=bool(job.get("verify")),
        preflight=False,
    )
    return results_to_json(results)


def main() -> int:
    # This process runs gfal2 copies and nothing else: Davix may skip re-reading the CA bundle per request.
    skip_ca_bundle_reload()
    job = json.load(sys.stdin)
    json.dump(run(job), sys.stdout)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
