"""The performance scripts of benchmarks/perf run end to end on the CPU with tiny models, so that a GPU lease finds
them working: each appends rows with both sides measured and their ratio."""

import json
import sys
from pathlib import Path

import pytest

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
