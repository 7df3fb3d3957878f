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
    for name in ("train_throughput", "sampling", "solvers", "optimisations", "common", "plain_loops", "lease"):
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


def test_solver_comparison_scores_each_setting_against_the_first(perf_scripts, tiny_pipeline_dir, paired_folder,
                                                                tmp_path):
    import solvers

    results, out = tmp_path / "results.jsonl", tmp_path / "comparison"
    arguments = [str(paired_folder), "--model", str(tiny_pipeline_dir), "--settings", "ddim:3", "dpm++:2",
                 "--device", "cpu", "--out", str(out), "--results", str(results)]
    solvers.main(arguments)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddim", 3), ("dpm++", 2)]
    assert all(0 < r["ssim"] < 1 and r["mae"] > 0 and r["generation_s"] > 0 and r["pairs"] == 6 for r in rows)
    assert len(list((out / "dpm++-2" / "generated").glob("*.png"))) == 6
    # the samplers really differ: the same seeds give other images
    assert rows[0]["mae"] != rows[1]["mae"]
    assert (out / "grid.jpg").is_file()
    with pytest.raises(FileExistsError, match="ddim-3"):  # a second run may not time a folder the first filled
        solvers.main(arguments)
    with pytest.raises(SystemExit):
        solvers.main([str(paired_folder), "--settings", "euler:10"])


@pytest.mark.parametrize("task", ["v2t", "t2ir"])
def test_optimisation_ladder_climbs_one_change_at_a_time(perf_scripts, tmp_path, compile_eagerly, monkeypatch, task):
    import optimisations

    ran = []  # per rung, what its training step really did: not the settings it was handed, but their effects
    original = optimisations.training_step

    def training_step(unet, *args, autoencoder=None, **switches):
        attention = {type(m.processor).__name__ for m in unet.modules() if hasattr(m, "processor")}
        rung = {"encodes": 0, "attention": attention}
        ran.append(rung)
        if autoencoder is not None:
            encode = autoencoder.encode

            def counted_encode(*a, **k):
                rung["encodes"] += 1
                return encode(*a, **k)

            autoencoder.encode = counted_encode

        def look(module, inputs, output):
            rung["channels_last"] = not inputs[0].is_contiguous() and inputs[0].is_contiguous(
                memory_format=torch.channels_last)
            rung["dtype"] = str(output.sample.dtype)

        unet.register_forward_hook(look)
        return original(unet, *args, autoencoder=autoencoder, **switches)

    class AdamW(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            ran[-1]["fused"] = bool(kwargs.get("fused"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(optimisations, "training_step", training_step)
    monkeypatch.setattr(torch.optim, "AdamW", AdamW)
    results = tmp_path / "results.jsonl"
    optimisations.main(["training", "--task", task, "--preset", "tiny", "--resolution", "32", "--batch-size", "2",
                        "--steps", "1", "--warmup", "0", "--device", "cpu", "--results", str(results)])
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["rung"] for r in rows] == [name for name, _ in optimisations.TRAINING_RUNGS]
    assert rows[0]["settings"] == {} and rows[-1]["settings"] == {
        "cached_latents": True, "sdpa": True, "bf16": True, "fused_adamw": True, "channels_last": True,
        "compile": "default"}
    for previous, row in zip(rows, rows[1:], strict=False):
        assert row["speedup_previous"] == pytest.approx(previous["seconds"] / row["seconds"], rel=0.01)
    assert all(r["seconds"] > 0 and r["speedup_first"] > 0 for r in rows)
    assert compile_eagerly == ["UNet2DModel" if task == "v2t" else "UNet2DConditionModel"]  # the last rung only
    assert [r["encodes"] > 0 for r in ran] == [True] + [False] * 6  # per step: two for v2t (target and condition)
    assert all(r["attention"] for r in ran)  # the tiny UNets have attention layers, so the switch is seen
    assert [r["attention"] for r in ran] == [{"AttnProcessor"}] * 2 + [{"AttnProcessor2_0"}] * 5
    assert [r["dtype"] for r in ran] == ["torch.float32"] * 3 + ["torch.bfloat16"] * 4
    assert [r["fused"] for r in ran] == [False] * 4 + [True] * 3
    assert [r["channels_last"] for r in ran] == [False] * 5 + [True] * 2


def test_optimisation_ladder_of_sampling(perf_scripts, tiny_pipeline_dir, tmp_path, compile_eagerly, monkeypatch):
    import optimisations

    processors = []  # the attention processors of each rung's UNet and autoencoder (both have a mid-block attention)
    original = optimisations.set_attention

    def set_attention(module, sdpa):
        if original(module, sdpa):  # the module's attention layers, all with the one processor
            processors.append({type(m.processor).__name__ for m in module.modules() if hasattr(m, "processor")})

    monkeypatch.setattr(optimisations, "set_attention", set_attention)
    results = tmp_path / "results.jsonl"
    optimisations.main(["sampling", "--model", str(tiny_pipeline_dir), "--resolution", "32", "--batch-sizes", "1",
                        "2", "--steps", "2", "--repeats", "1", "--device", "cpu", "--results", str(results)])
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    rungs = [name for name, _ in optimisations.SAMPLING_RUNGS]
    assert [(r["batch_size"], r["rung"]) for r in rows] == [(b, name) for b in (1, 2) for name in rungs]
    assert processors == ([{"AttnProcessor"}] * 2 + [{"AttnProcessor2_0"}] * 2 * (len(rungs) - 1)) * 2  # per batch
    assert compile_eagerly == ["UNet2DModel"] * 4  # two compiled rungs per batch size
    assert rows[-1]["settings"]["compile"] == "reduce-overhead" and rows[-1]["settings"]["bf16"] is True


def test_a_rung_out_of_memory_is_recorded_and_skipped_over(perf_scripts, tmp_path, monkeypatch):
    import optimisations

    seconds = iter([2.0, 1.0, 0.5, 0.5, 0.25, 0.25])

    def rung(args, settings):
        if settings == {}:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return next(seconds), 1.0

    monkeypatch.setattr(optimisations, "training_rung", rung)
    results = tmp_path / "results.jsonl"
    optimisations.main(["training", "--preset", "tiny", "--device", "cpu", "--results", str(results)])
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert rows[0]["seconds"] is None and rows[0]["error"] == "out of memory"
    assert [r["speedup_previous"] for r in rows[1:]] == [1.0, 2.0, 2.0, 1.0, 2.0, 1.0]
    assert [r["speedup_first"] for r in rows[1:]] == [1.0, 2.0, 4.0, 4.0, 8.0, 8.0]


def test_lease_queue_waits_for_the_text_encoder_and_stops_when_the_minutes_run_out(perf_scripts, tmp_path,
                                                                                   monkeypatch):
    """benchmarks/perf/lease.py at tiny sizes: the sampling pipeline first, then each item in order with its rows in
    one results file; a T2IR item waits until a later call has carried the text encoder; no item starts once the
    minutes are spent."""
    import shutil

    import lease

    from thermosynth.models.text_encoders import _minilm_path

    items = {item[0]: item for item in lease.QUEUE}
    monkeypatch.setattr(lease, "QUEUE", [items["train-base-256"], items["sample-20"], items["train-t2ir-base-256"]])
    carried, waited = tmp_path / "minilm", []

    def next_call_carries():
        waited.append(True)
        shutil.copytree(_minilm_path(), carried)

    monkeypatch.setattr(lease, "pause_for_a_later_call", next_call_carries)
    out = tmp_path / "lease"
    done = lease.run_queue(out, str(lease.AUTOENCODER), carried, minutes=30, tiny=True, first=None)
    assert [(d["item"], d["rc"]) for d in done] == [
        ("v2t-pipeline", 0), ("train-base-256", 0), ("sample-20", 0), ("train-t2ir-base-256", 0)]
    assert len(waited) == 1  # the T2IR item waited once, then found the encoder
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [row["question"] for row in rows] == ["v2t training throughput", "v2t sampling", "t2ir training throughput"]
    assert [json.loads(line) for line in (out / "queue.jsonl").read_text().splitlines()] == done

    again = lease.run_queue(out, str(lease.AUTOENCODER), carried, minutes=0, tiny=True, first="sample-20")
    assert again[1:] == [{"item": "sample-20", "skipped": "the minutes ran out"},
                         {"item": "train-t2ir-base-256", "skipped": "the minutes ran out"}]
