"""The end of a launched command: gloo's threads, where FSDP2 keeps its process group alive past
destroy_process_group, must not reach the interpreter's teardown (they abort the process there), and ending early
must lose none of the command's output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from Linux's /proc")

# A one-process gloo group whose Python handle outlives destroy_process_group, as FSDP2's caches keep it.
GROUP_KEPT_ALIVE = """
import logging, sys
import torch.distributed as dist
from thermosynth.distributed import exit_if_gloo_outlives_its_group, gloo_threads_running
dist.init_process_group("gloo", init_method="file://{store}", rank=0, world_size=1)
kept = dist.group.WORLD
dist.destroy_process_group()
"""


def run(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    code = GROUP_KEPT_ALIVE.format(store=tmp_path / "store") + script
    buffered = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # as a pipe is
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=buffered)


def test_gloo_threads_are_seen_while_the_group_lives_on_and_not_once_it_is_freed(tmp_path):
    result = run("import gc\nprint(gloo_threads_running())\ndel kept\ngc.collect()\nprint(gloo_threads_running())",
                 tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "False"]


def test_ending_early_keeps_every_line_written_and_reports_success(tmp_path):
    script = ("logging.basicConfig(level=logging.INFO)\nlogging.getLogger('t').info('logged before the end')\n"
              "print('model written to somewhere', end='')\nexit_if_gloo_outlives_its_group()\n"
              "print(' and this line is never reached')\nsys.exit(3)")
    result = run(script, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "model written to somewhere"  # buffered (a pipe), flushed before the process ended
    assert "logged before the end" in result.stderr


def test_a_freed_group_ends_the_ordinary_way(tmp_path):
    result = run("del kept\nimport gc\ngc.collect()\nexit_if_gloo_outlives_its_group()\nprint('went on')\n"
                 "sys.exit(3)", tmp_path)
    assert result.returncode == 3 and result.stdout == "went on\n", result.stderr[-2000:]
