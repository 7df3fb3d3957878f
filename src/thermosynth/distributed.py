"""Running on several processes: one home for how thermosynth asks accelerate which process it is.

A command started plainly runs as one process and every helper here is a no-op. Started by `accelerate launch`
(or torchrun) it runs once per process: training averages gradients across them (DDP, or FSDP2 with everything
sharded: training/sharding.py), and `translate`, `generate` and `evaluate` split their inputs so each process makes a
contiguous share.
Every output depends only on its input and seed, never on which process made it, so N processes write exactly
the files one process writes.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import gather_object, parse_flag_from_env

T = TypeVar("T")

# torchmetrics options for a metric one process computes over all the data: torchmetrics otherwise gathers its
# state from every process on compute() whenever a process group exists, and waits for processes that never come.
SCORED_ALONE = {"sync_on_compute": False}


def uses_cpu() -> bool:
    """On a machine without CUDA, processes launched together talk over gloo on the CPU (accelerate's multi-CPU
    mode, which it enters only when asked for the CPU); `ACCELERATE_USE_CPU=1` asks for it on a GPU machine."""
    return parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()


def process_state() -> PartialState:
    """accelerate's per-process state (made on the first call, shared by every later one and by `Accelerator`):
    rank, count, and the device this process owns (`cuda:<local rank>` with GPUs)."""
    return PartialState(cpu=uses_cpu())


def process_device(device: str | None = None) -> str:
    """`device` when given (checked), else this process's own device."""
    return check_device(device) if device else str(process_state().device)


def check_device(device: str) -> str:
    """`device` if torch can use it here, else a ValueError that says why (torch's own errors are an assertion or a
    list of every device type it knows, after the model has loaded)."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r}: not a device name; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this torch cannot use a CUDA GPU (torch.cuda.is_available() is "
                             "False); use cpu, or install a CUDA build of torch")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             "numbered from 0")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: Apple's MPS is not available here; use cpu")
    return device


def is_main_process() -> bool:
    return process_state().is_main_process


def this_process_share(items: list[T]) -> list[T]:
    """The contiguous part of `items` this process works on: all of them for a single process. Split the full,
    fixed list (not what is left to do), so processes that look at the disk at different moments agree."""
    state = process_state()
    if state.num_processes == 1:
        return list(items)
    with state.split_between_processes(list(items)) as share:
        return list(share)


def wait_for_everyone() -> None:
    process_state().wait_for_everyone()


def close_process_group() -> None:
    """End the process group a launched command joined, while the interpreter is still whole: left to interpreter
    shutdown, gloo's worker threads can abort the process ("terminate called without an active exception", SIGABRT)
    after all its work is written, as CI saw once after a 2-process translate (pytorch/pytorch#190489)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def exit_if_gloo_outlives_its_group() -> None:
    """End a command that has finished its work without the interpreter's teardown where gloo's threads still run
    after `close_process_group`: FSDP2 keeps the group alive past destroy_process_group (DTensor's caches, and
    references held from C++ beyond them, hold its device mesh), and gloo threads that run into the teardown abort the
    process as above, in 9 of 140 two-process FSDP runs (benchmarks/teardown/RESULTS.md). Everything is written
    by now; only the streams need flushing."""
    if not gloo_threads_running():
        return
    logging.getLogger(__name__).debug("gloo's threads outlive the process group: ending without teardown")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def gloo_threads_running() -> bool:
    """Whether threads gloo started still run in this process (read from the names Linux gives threads; False where
    /proc is not there)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return False
    names = []
    for task in tasks.iterdir():
        try:
            names.append((task / "comm").read_text())
        except OSError:  # the thread ended while we looked
            continue
    return any("gloo" in name for name in names)


def summed_counts(counts: dict[str, int]) -> dict[str, int]:
    """Every process's counts added up (each process gets the totals)."""
    if process_state().num_processes == 1:
        return counts
    totals: dict[str, int] = {}
    for part in gather_object([counts]):
        for key, value in part.items():
            totals[key] = totals.get(key, 0) + value
    return totals

