"""Compute backends behind one interface; ``get_compute_backend(name, **opts)`` imports the chosen one lazily."""

from __future__ import annotations

import importlib
from typing import Any

from rawflow.compute.base import (
    JOB_KEY,
    ComputeBackend,
    ComputeBackendError,
    ComputeError,
    ComputeJobError,
    JobHandle,
    JobOutcome,
    JobSpec,
    JobState,
    JobStatus,
    stage_in,
    stage_out,
)
from rawflow.errors import ConfigError

# name → "module:class"; imported only when asked for (the htcondor bindings and DIRAC are heavy and optional).
COMPUTE_BACKENDS: dict[str, str] = {
    "dirac": "rawflow.compute.dirac_backend:DiracBackend",
    "htcondor": "rawflow.compute.htcondor_backend:HTCondorBackend",
}


def get_compute_backend(name: str, **opts: Any) -> ComputeBackend:
    """A compute backend by name, constructed with ``opts``."""
    try:
        target = COMPUTE_BACKENDS[name]
    except KeyError:
        raise ConfigError("<compute>", "backend", name, f"known: {', '.join(COMPUTE_BACKENDS)}") from None
    module_name, class_name = target.split(":")
    backend: ComputeBackend = getattr(importlib.import_module(module_name), class_name)(**opts)
    return backend


__all__ = [
    "COMPUTE_BACKENDS",
    "JOB_KEY",
    "ComputeBackend",
    "ComputeBackendError",
    "ComputeError",
    "ComputeJobError",
    "JobHandle",
    "JobOutcome",
    "JobSpec",
    "JobState",
    "JobStatus",
    "get_compute_backend",
    "stage_in",
    "stage_out",
]
