"""Score the T2IR test outputs of the recipe (mask loss on = the shipped `t2ir-hituav`, and off) against HIT-UAV test.

    python benchmarks/shipped/evaluate_t2ir.py ../shared/data/hit-uav .shipped/device-results benchmarks/shipped

Each model drew one image per test frame from that frame's detailed caption (DDIM 20, guidance 3, seeded by index;
on the GPU in fp32, recipe.py). The 579 real test frames are fitted to the same 256x320. Set against them: Fréchet
distance and KID on EfficientNet-Lite0 features (not FID), intensity-histogram W1, hot-region statistics.
Writes t2ir-metrics.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from recipe import T2IR_SIZE  # this folder's script (on sys.path when run as a script)

from thermosynth.data.augment import fit_to_size
from thermosynth.data.images import read_thermal
from thermosynth.evaluation.unpaired import compare_sets


def as_model_range(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32))[None] / 127.5 - 1  # (1, H, W) in [-1, 1]


def real_frames(hit_uav: Path, stems: list[str]) -> torch.Tensor:
    """The HIT-UAV frames the captions were written for, fitted to the generated size: (N, 1, H, W) in [-1, 1]."""
    return torch.stack([as_model_range(fit_to_size(read_thermal(hit_uav / "JPEGImages" / f"{stem}.jpg"), T2IR_SIZE)[0])
                        for stem in stems])


def main(hit_uav: Path, results: Path, out: Path) -> None:
    records = [json.loads(line) for line in (results / "t2ir-test-captions.jsonl").read_text().splitlines()]
    real = real_frames(hit_uav, [r["stem"] for r in records])
    metrics = {}
    for name in ("t2ir-mask-off", "t2ir-mask-on"):
        generated = torch.stack([as_model_range(np.asarray(Image.open(results / f"test-{name}" / f"{r['stem']}.png")))
                                 for r in records])
        metrics[name] = compare_sets(real, generated)
        print(name, json.dumps(metrics[name]))
    (out / "t2ir-metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
