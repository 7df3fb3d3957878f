"""Several processes (`accelerate launch`, gloo on the CPU): every training task trains through the DDP wrapper and
exports, and translate / generate / evaluate split their inputs so two processes write exactly what one writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "thermosynth" / "samples"
# accelerate's `--cpu` starts a single process; `--multi_gpu` starts them through torchrun, and thermosynth then
# asks for accelerate's multi-CPU mode (gloo) because ACCELERATE_USE_CPU is set / no GPU is there.
LAUNCH = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "thermosynth.cli"]
ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def thermosynth(*args, processes: int) -> str:
    """Run a thermosynth command as one plain process or as two launched ones; returns its output."""
    command = [sys.executable, *(LAUNCH if processes == 2 else ["-m", "thermosynth.cli"]), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Each training task run for 2 steps on two processes (the autoencoder once more, feeding V2T and T2IR)."""
    runs = tmp_path_factory.mktemp("runs")
    road, hit = SAMPLES / "roadscene", SAMPLES / "hit-uav"
    few = ["--steps", "2", "--batch-size", "1", "--checkpoint-every", "1"]
    outputs = [
        thermosynth("train", "autoencoder", "--data", hit, "--data", road, "--split", "train", *few,
                    "--out", runs / "ae", processes=2),
        thermosynth("train", "pix2pix", "--data", road, *few, "--out", runs / "pix2pix", processes=2),
    ]
    autoencoder = runs / "ae" / "autoencoder"
    outputs += [
        thermosynth("train", "v2t", "--data", road, *few, "--autoencoder", autoencoder, "--out", runs / "v2t",
                    processes=2),
        thermosynth("train", "t2ir", "--data", hit, "--split", "train", *few, "--autoencoder", autoencoder,
                    "--out", runs / "t2ir", processes=2),
    ]
    for output in outputs:
        assert "training on 2 processes (MULTI_CPU" in output
        assert output.count("model written to") == 1  # printed by the main process alone
    return runs


def test_every_training_task_finishes_and_exports_on_two_processes(trained):
    assert (trained / "ae" / "autoencoder" / "config.json").is_file()
    for task in ("pix2pix", "v2t", "t2ir"):
        assert (trained / task / "pipeline" / "model_index.json").is_file()
        assert (trained / task / "checkpoints").is_dir()
        assert '"step": 2' in (trained / task / "metrics.jsonl").read_text()  # one log, by the main process


def test_two_processes_write_exactly_what_one_writes(trained, tmp_path):
    visible = tmp_path / "visible"  # five inputs: an uneven split (3 + 2)
    visible.mkdir()
    samples = sorted((SAMPLES / "roadscene" / "crop_LR_visible").iterdir())
    for i in range(5):
        (visible / f"{i}{samples[i % len(samples)].suffix}").write_bytes(samples[i % len(samples)].read_bytes())
    v2t = trained / "v2t" / "pipeline"
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        output = thermosynth("translate", visible, "--model", v2t, "--steps", "2", "--palette", "ironbow",
                             "--out", out / "translate", processes=processes)
        assert "5 written" in output  # counted over both processes
        thermosynth("generate", "a car on a road", "--model", trained / "t2ir" / "pipeline", "-n", "3",
                    "--steps", "2", "--out", out / "generate", processes=processes)
        output = thermosynth("evaluate", SAMPLES / "roadscene", "--model", v2t, "--steps", "2",
                             "--out", out / "evaluate", processes=processes)
        assert output.count("report written to") == 1
    one, two = tmp_path / "p1", tmp_path / "p2"
    for command in ("translate", "generate", "evaluate/generated"):
        expected = files(one / command)
        assert expected and files(two / command) == expected, command
    assert len(files(one / "translate")) == 10 and len(files(one / "generate")) == 3
