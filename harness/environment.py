"""The machine a run uses: cores it may take, library versions, accelerators, CPU model."""

from __future__ import annotations

import contextlib
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def cpu_share() -> int:
    """Cores this process may use: all it can run on, or under pytest-xdist its share of
    them (N workers each starting a thread or fitting process per core oversubscribe the
    machine; on a loaded machine OpenMP's spinning threads then slow small ops ~20x)."""
    pinned = os.environ.get("LMCLAIMS_JOBS", "")
    if pinned.isdigit() and int(pinned) > 0:
        # Set where this process is already one of a pool (a calibration rep's worker).
        return int(pinned)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    return max(1, (cores or 1) // (int(workers) if workers.isdigit() and workers != "0" else 1))


def library_versions() -> dict[str, str]:
    out = {}
    for package in ("torch", "transformer-lens", "transformers", "gguf", "numpy", "scipy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def accelerators() -> list[str]:
    """The accelerators torch can see on this machine (empty on a CPU-only one)."""
    import torch  # heavy: only a report's provenance asks

    found = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None
