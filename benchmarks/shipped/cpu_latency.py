"""CPU latency of the shipped models: one 256x256 translation (v2t-roadscene) and one 256x320 generation
(t2ir-hituav) with the settings recorded in each model (model_index.json `sampling`; printed and kept with the
result), and the translation at 20 steps with the recorded guidance (the shipped-models issue's target: under 10 s),
threads limited to 2.

    python benchmarks/shipped/cpu_latency.py            # appends a line to benchmarks/shipped/cpu_latency.jsonl

Prediction (written before the first run, at the first settings of 20 steps and guidance 1.5, from per-part timings
on this 2-core machine): encoder 0.7 s + 20 UNet passes on a doubled batch (guidance) ~ 20 x 0.2 s + decoder 1.2 s
~ 6 s for a translation; target under 10 s.
Median of 3 calls after one warm-up.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from thermosynth.environment import describe
from thermosynth.pipelines import load_pipeline, load_text_pipeline


def median_seconds(call, repeats: int = 3) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(2)
    visible = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    v2t = load_pipeline("v2t-roadscene")
    v2t.set_progress_bar_config(disable=True)
    t2ir = load_text_pipeline("t2ir-hituav")
    t2ir.set_progress_bar_config(disable=True)
    result = {
        "v2t_256x256_s": median_seconds(lambda: v2t(visible, generator=torch.Generator().manual_seed(0))),
        # issue 9's yardstick, whatever the recorded step count: 20 steps at the recorded guidance
        "v2t_256x256_20steps_s": median_seconds(lambda: v2t(visible, num_inference_steps=20,
                                                            generator=torch.Generator().manual_seed(0))),
        "t2ir_256x320_s": median_seconds(lambda: t2ir("an aerial thermal image: a car on a road",
                                                      generator=torch.Generator().manual_seed(0))),
        "settings": {"v2t": v2t.config.sampling, "t2ir": t2ir.config.sampling},
        **describe(), "command": "python benchmarks/shipped/cpu_latency.py",
    }
    print(json.dumps(result))
    with (Path(__file__).parent / "cpu_latency.jsonl").open("a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
