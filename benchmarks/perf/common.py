"""What every performance script shares: timing with the GPU synchronised, and the results file each row is appended
to with the machine, versions, command and date."""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from thermosynth.environment import describe, device_name

RESULTS = Path(__file__).with_name("results.jsonl")


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory_gib(device: str) -> float:
    """CUDA's max allocated; on the CPU, the process's peak resident set."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def timed(call: Callable[[], object], device: str, repeats: int, warmup: int = 0) -> tuple[float, float]:
    """(median seconds of `repeats` calls, seconds of the first call: allocations, or compiling). Between the two,
    `warmup` more calls go untimed."""
    synchronize(device)
    start = time.perf_counter()
    call()
    synchronize(device)
    first = time.perf_counter() - start
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), first


def record(results: Path, row: dict, device: str) -> dict:
    """Append `row` to the JSON-lines `results`, with where, with what and how it was measured; return it."""
    row = {**row, "device": device_name(device), **describe(), "command": "python " + " ".join(sys.argv),
           "date": time.strftime("%Y-%m-%d")}
    with results.open("a") as file:
        file.write(json.dumps(row) + "\n")
    return row
