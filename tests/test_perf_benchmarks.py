"""The performance scripts of benchmarks/perf run end to end on the CPU with tiny models, so that a GPU lease finds
them working: each appends rows with both sides measured and their ratio."""

import json
import sys
from pathlib import Path

import pytest
import torch

PERF = Path(__file__).parents[1] / "benchmarks" / "perf"


@pytest.fixture
def perf_scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(PERF))
    yield
    for name in ("train_throughput", "sampling"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("task", ["v2t", "t2ir"])
def test_training_throughput_measures_both_loops(perf_scripts, tmp_path, task):
    import train_throughput

    results = tmp_path / "results.jsonl"
    train_throughput.main(["--task", task, "--preset", "tiny", "--resolution", "32", "--batch-size", "2", "--steps",
                           "2", "--warmup", "1", "--device", "cpu", "--results", str(results)])
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["question"] == f"{task} training throughput"
    assert row["thermosynth_images_per_s"] > 0 and row["reference_images_per_s"] > 0
    assert row["ratio"] == pytest.approx(row["thermosynth_images_per_s"] / row["reference_images_per_s"], rel=0.01)
    assert row["train_gflop_per_image"] > 0 and 0 < row["thermosynth_mfu"] < 1


def test_sampling_times_the_pipeline_and_the_plain_loop(perf_scripts, tiny_pipeline_dir, tmp_path):
    import sampling

    results = tmp_path / "results.jsonl"
    sampling.main(["--model", str(tiny_pipeline_dir), "--resolution", "32", "--batch-sizes", "1", "2", "--steps", "2",
                   "--repeats", "1", "--device", "cpu", "--results", str(results)])
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["batch_size"], r["steps"]) for r in rows] == [(1, 2), (2, 2)]
    assert all(r["thermosynth_s"] > 0 and r["reference_s"] > 0 and r["guidance"] > 1 for r in rows)


@pytest.fixture
def compile_eagerly(monkeypatch):
    """torch.compile with the eager backend (dynamo traces, no kernels are generated): the scripts' --compile wiring
    runs in seconds on the CPU; the names of the compiled modules are recorded."""
    compiled, original = [], torch.nn.Module.compile

    def compile_module(module, *args, **kwargs):
        compiled.append(type(module).__name__)
        original(module, backend="eager")

    monkeypatch.setattr(torch.nn.Module, "compile", compile_module)
    return compiled


def test_compile_switches_reach_the_unet(perf_scripts, tiny_pipeline_dir, tmp_path, compile_eagerly):
    import sampling
    import train_throughput

    results = tmp_path / "results.jsonl"
    train_throughput.main(["--preset", "tiny", "--resolution", "32", "--batch-size", "2", "--steps", "2", "--warmup",
                           "1", "--device", "cpu", "--compile", "--results", str(results)])
    sampling.main(["--model", str(tiny_pipeline_dir), "--resolution", "32", "--batch-sizes", "1", "--steps", "2",
                   "--repeats", "1", "--device", "cpu", "--compile", "reduce-overhead", "--results", str(results)])
    training, translation = [json.loads(line) for line in results.read_text().splitlines()]
    assert compile_eagerly == ["UNet2DModel", "UNet2DModel"]  # thermosynth's training UNet, the pipeline's UNet
    assert training["compile"] is True and training["thermosynth_first_step_s"] > 0
    assert translation["compile"] == "reduce-overhead" and translation["thermosynth_first_call_s"] > 0
    assert translation["thermosynth_s"] > 0 and translation["reference_s"] > 0
