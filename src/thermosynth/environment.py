"""The machine and software a result was measured on.

One description for every record that names them (evaluation reports, training runs, the benchmarks' results files),
so that two records of one machine read alike. On Linux `platform.processor()` is empty and `platform.machine()` is
only "x86_64", so the CPU's model name comes from /proc/cpuinfo.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch


def processor_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(device: str | torch.device = "cpu") -> str:
    """The GPU's name for a CUDA device, else the CPU's."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else processor_name()


def usable_cpus() -> int:
    """The cores this process may run on (a container's or taskset's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def describe() -> dict:
    """The CPU, the cores usable, torch's threads, the GPU (None without CUDA), and the versions that decide the
    arithmetic."""
    from thermosynth import __version__

    try:
        diffusers = version("diffusers")
    except PackageNotFoundError:  # a source tree on sys.path without its metadata
        diffusers = None
    return {"cpu": processor_name(), "cpus_usable": usable_cpus(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers, "thermosynth": __version__}
