"""What a run ran on and with: library versions, the machine, and its memory use.

One place for what every artifact records (reports, datasets, checkpoints, bench results).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["FLAGS", "library_versions", "cpu_name", "cpu_flags", "torch_builds", "machine", "peak_rss_mb", "tree_rss_mb", "PeakMemory"]

_PACKAGES = ("torch", "numpy", "scipy", "mujoco", "gymnasium", "stable-baselines3", "h5py", "minari", "rerun-sdk",
             "matplotlib")


def library_versions() -> dict[str, str | None]:
    """Versions of wm_eval, Python and the libraries that shape the numbers (``None``: not installed)."""
    from wm_eval import __version__

    versions: dict[str, str | None] = {"wm_eval": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_vp2intersect", "amx_bf16", "amx_tile")


def torch_builds() -> dict[str, Any]:
    """What torch's CPU kernels are built with: oneDNN and MKL versions, the ISA torch dispatches to."""
    import re

    import torch

    config = torch.__config__.show()
    onednn, mkl = re.search(r"MKL-DNN v([\w.]+)", config), re.search(r"Math Kernel Library Version ([\w.]+)", config)
    return {"torch": torch.__version__, "onednn": onednn and onednn.group(1), "mkl": mkl and mkl.group(1),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def cpu_flags() -> list[str]:
    """The CPU flags that decide these kernels' speed (``/proc/cpuinfo``; empty elsewhere)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    present = set(flags.split(":", 1)[1].split())
    return [f for f in FLAGS if f in present]


def machine() -> dict[str, Any]:
    """CPU, cores (all and usable), OS and load at the time of the call."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "usable_cores": usable, "platform": platform.platform(),
            "load_average": load}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, MB (Linux ``/proc``; 0 elsewhere)."""
    total_kb, stack = 0, [pid]
    while stack:
        proc = Path(f"/proc/{stack.pop()}")
        try:
            total_kb += next(int(line.split()[1]) for line in (proc / "status").read_text().splitlines()
                             if line.startswith("VmRSS:"))
            for task in (proc / "task").iterdir():
                stack += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError, StopIteration):  # the process ended meanwhile
            continue
    return total_kb / 2**10


class PeakMemory:
    """Context manager sampling :func:`tree_rss_mb` of this process every ``interval`` s; ``.peak`` MB."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss_mb(os.getpid()))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
