"""Child process for one bulk gfal2 copy: JSON job on stdin, JSON results on stdout.

It exists so that a gfal2 crash (python3-gfal2 segfaults when several files of one bulk copy fail) kills
this child and not the Airflow worker; :class:`rawflow.transfer.engine.CopyEngine` starts it and splits the
batch when it dies. It is the only crash boundary: the storage inside copies in this process (no grandchild),
and does not compare checksums (the engine does, once per replica). With ``measure`` it reads each copied
destination's size and adler32 right after the copy (once per replica) and reports them for the engine to
compare: here Davix keeps the CA bundle it has read, in the task process every WebDAV request re-reads it
(~20 ms of CPU per stat or checksum, measured). The job may carry credentials, which is why it arrives on stdin.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from rawflow.errors import StorageError
from rawflow.storage.base import CopyRequest, CopyResult, Storage
from rawflow.storage.gfal2_storage import skip_ca_bundle_reload
from rawflow.transfer.engine import DEFAULT_STORAGE_FACTORY, StorageSpec, results_to_json


def run(job: dict[str, Any]) -> list[dict[str, Any]]:
    options = dict(job["storage"].get("options", {}))
    if job["storage"]["factory"] == DEFAULT_STORAGE_FACTORY:
        options["isolate_bulk"] = False  # this process is the crash boundary
    spec = StorageSpec(str(job["storage"]["factory"]), options)
    requests = [CopyRequest(r["source"], r["destination"], None, r.get("size")) for r in job["requests"]]
    storage = spec.build()
    parallel = int(job["parallel"])
    results = storage.copy(
        requests,
        tpc=str(job["tpc"]),
        parallel=parallel,
        overwrite=False,
        verify=bool(job.get("verify")),
        preflight=False,
    )
    if job.get("measure"):
        results = measure_destinations(storage, results, parallel)
    return results_to_json(results)


def measure_destinations(storage: Storage, results: list[CopyResult], parallel: int) -> list[CopyResult]:
    """Each successful copy with its destination's size and adler32; a destination that cannot be read now is
    left unmeasured (the engine asks again and reports the real error)."""

    def measure(result: CopyResult) -> CopyResult:
        if not result.ok or result.adler32_at_destination is not None:  # failed, or measured by the copy itself
            return result
        try:
            size = storage.stat(result.request.destination).size
            adler32 = storage.checksum(result.request.destination, "adler32")
        except StorageError:
            return result
        return replace(result, size_at_destination=size, adler32_at_destination=adler32)

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="measure") as pool:
        return list(pool.map(measure, results))


def main() -> int:
    # This process runs gfal2 copies and nothing else: Davix may skip re-reading the CA bundle per request.
    skip_ca_bundle_reload()
    job = json.load(sys.stdin)
    json.dump(run(job), sys.stdout)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
