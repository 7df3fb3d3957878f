"""Several processes (`accelerate launch`, gloo on the CPU): every training task trains through the DDP wrapper and
exports, trains the same numbers sharded with FSDP2 and resumes exactly there, and translate / generate / evaluate
split their inputs so two processes write exactly what one writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "thermosynth" / "samples"
ROAD, HIT = SAMPLES / "roadscene", SAMPLES / "hit-uav"
# accelerate's `--cpu` starts a single process; `--multi_gpu` starts them through torchrun, and thermosynth then
# asks for accelerate's multi-CPU mode (gloo) because ACCELERATE_USE_CPU is set / no GPU is there.
PROCESSES = ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
LAUNCH = ["-m", "accelerate.commands.launch", "--multi_gpu", *PROCESSES, "-m", "thermosynth.cli"]
# FSDP2 on CPU processes goes through a launcher that lets accelerate enter FSDP there (see its docstring). The
# diffusers networks shard per ResnetBlock2D, as the README suggests; pix2pix has none and is one shard unit.
FSDP = ["-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version", "2", *PROCESSES]
FSDP_LAUNCHER = str(Path(__file__).with_name("fsdp_on_cpu.py"))
LAUNCH_FSDP = [*FSDP, FSDP_LAUNCHER]
LAUNCH_FSDP_BLOCKS = [*FSDP, "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                      "--fsdp_transformer_layer_cls_to_wrap", "ResnetBlock2D", FSDP_LAUNCHER]
ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TASKS = ("autoencoder", "pix2pix", "v2t", "t2ir")


def thermosynth(*args, processes: int, launch: list[str] = LAUNCH) -> str:
    """Run a thermosynth command as one plain process or as two launched ones; returns its output."""
    launch = ["-m", "thermosynth.cli"] if processes == 1 else launch
    result = subprocess.run([sys.executable, *launch, *map(str, args)], capture_output=True, text=True, env=ENV,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def train_two_steps(task: str, out: Path, autoencoder: Path | None = None, fsdp: bool = False) -> str:
    """Two steps of `task` on two processes, a checkpoint after each (V2T and T2IR on the given autoencoder)."""
    data = {"autoencoder": ["--data", HIT, "--data", ROAD, "--split", "train"], "pix2pix": ["--data", ROAD],
            "v2t": ["--data", ROAD, "--autoencoder", autoencoder],
            "t2ir": ["--data", HIT, "--split", "train", "--autoencoder", autoencoder]}[task]
    return thermosynth("train", task, *data, "--steps", "2", "--batch-size", "1", "--checkpoint-every", "1",
                       "--out", out, processes=2,
                       launch=(LAUNCH_FSDP if task == "pix2pix" else LAUNCH_FSDP_BLOCKS) if fsdp else LAUNCH)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def weights(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every safetensors file under a folder (an export or a checkpoint), by relative path."""
    return {str(p.relative_to(folder)): load_file(p) for p in sorted(folder.rglob("*.safetensors"))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Each training task run for 2 steps on two processes with DDP (the autoencoder first, feeding V2T and T2IR)."""
    runs = tmp_path_factory.mktemp("runs")
    for task in TASKS:
        output = train_two_steps(task, runs / task, autoencoder=runs / "autoencoder" / "autoencoder")
        assert "training on 2 processes (MULTI_CPU" in output
        assert output.count("model written to") == 1  # printed by the main process alone
    return runs


def test_every_training_task_finishes_and_exports_on_two_processes(trained):
    assert (trained / "autoencoder" / "autoencoder" / "config.json").is_file()
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


def test_fsdp_trains_what_ddp_trains_and_resumes_exactly(trained, tmp_path):
    """FSDP2 shards the weights, and the loop shards the EMA and the optimizer state the same way and gathers them
    for checkpoints, validation and exports. Same data and seeds as the DDP runs, so the same numbers up to the
    rounding of the gradient reductions (reduce-scatter against all-reduce)."""
    for task in TASKS:
        output = train_two_steps(task, tmp_path / task, autoencoder=trained / "autoencoder" / "autoencoder",
                                 fsdp=True)
        assert "training on 2 processes (FSDP" in output and output.count("model written to") == 1
        export = "autoencoder" if task == "autoencoder" else "pipeline"
        for folder in (export, "checkpoints/step-0000002"):  # the EMA weights, and the whole training state
            sharded, replicated = weights(tmp_path / task / folder), weights(trained / task / folder)
            assert sharded.keys() == replicated.keys() and sharded, (task, folder)
            for name, tensors in sharded.items():
                assert tensors.keys() == replicated[name].keys()
                for key, value in tensors.items():
                    torch.testing.assert_close(value, replicated[name][key], rtol=0, atol=1e-5, msg=f"{name} {key}")
        assert (tmp_path / task / "samples" / "step-0000002.png").is_file()

    # Killed after its first checkpoint: the rerun restores the sharded EMA and optimizer state exactly.
    run, uninterrupted = tmp_path / "v2t", weights(tmp_path / "v2t")
    shutil.rmtree(run / "checkpoints" / "step-0000002")
    shutil.rmtree(run / "pipeline")
    output = train_two_steps("v2t", run, autoencoder=trained / "autoencoder" / "autoencoder", fsdp=True)
    assert "resuming" in output and "from step 1" in output
    resumed = weights(run)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensors in resumed.items():
        for key, value in tensors.items():
            assert torch.equal(value, uninterrupted[name][key]), f"{name} {key}"
