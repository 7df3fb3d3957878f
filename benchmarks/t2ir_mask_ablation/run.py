"""Two T2IR runs that differ in one choice, with the same budget, scored on HIT-UAV test. `--compare mask` (the
default): TxT2IR's thermal-mask loss on and off: does the gradient-carrying mask term help? `--compare
prediction-type`: noise against velocity prediction (on a zero-terminal-SNR schedule), both without the mask term.

    python benchmarks/t2ir_mask_ablation/run.py ../shared/data/hit-uav runs/t2ir-ablation --preset tiny --steps 1000
    python benchmarks/t2ir_mask_ablation/run.py ../shared/data/hit-uav runs/t2ir-prediction --preset tiny \
        --steps 1000 --compare prediction-type --autoencoder src/thermosynth/pretrained/autoencoder

1. One autoencoder on HIT-UAV train (shared by both runs), or `--autoencoder`'s.
2. `thermosynth train t2ir` twice on HIT-UAV train, the same preset, steps and seed; for `mask`: --mask-loss-weight 0
   and the default (lambda 1.0, t <= 500, M = 5.0 on hot pixels inside the annotated boxes, 0.5 elsewhere).
3. For `--eval-images` test images spread over the split, each model generates one image from that image's
   detailed caption (DDIM 25, guidance 3, seed per image); the real test images are fitted to the same size.
4. Generated vs real: Fréchet distance and KID on EfficientNet-Lite0 features (not FID), intensity W1, and
   hot-region statistics (fraction of hot pixels, mean grey level inside the hot mask).
Writes results.json, grid.png (rows: caption; columns: real | first run | second run) and grid_prompts.txt into the
run folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from thermosynth.environment import describe

# Extra arguments of each run. HIT-UAV's Otsu masks cover about half of a frame (warm roads and roofs), so the
# mask is kept inside the annotated boxes: the hot people and vehicles that TxT2IR's mask is meant to mark.
COMPARISONS = {
    "mask": {"mask-off": ["--mask-loss-weight", "0"], "mask-on": ["--mask-in-boxes"]},
    "prediction-type": {name: ["--mask-loss-weight", "0", "--prediction-type", name]
                        for name in ("epsilon", "v_prediction")},
}


def run(*args: str) -> float:
    command = [sys.executable, "-m", "thermosynth.cli", *args]
    print("$ thermosynth " + " ".join(args), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, help="T2IR steps for both runs (default: the preset's)")
    parser.add_argument("--eval-images", type=int, default=100)
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="mask")
    parser.add_argument("--autoencoder", help="a trained autoencoder to share (default: train one on the data)")
    args = parser.parse_args()
    out = Path(args.out)
    runs = COMPARISONS[args.compare]
    common = ["--data", args.data, "--split", "train", "--preset", args.preset]
    times, autoencoder = {}, args.autoencoder
    if autoencoder is None:
        times["autoencoder"] = run("train", "autoencoder", *common, "--out", str(out / "autoencoder"))
        autoencoder = str(out / "autoencoder" / "autoencoder")
    for name, extra in runs.items():
        extra = (["--steps", str(args.steps)] if args.steps else []) + extra
        times[name] = run("train", "t2ir", *common, "--out", str(out / name), "--autoencoder", autoencoder, *extra)
    start = time.perf_counter()
    results = evaluate(Path(args.data), out, args.eval_images, list(runs))
    times["generate_and_score"] = time.perf_counter() - start
    results.update(
        data=args.data, preset=args.preset, steps=args.steps, compare=args.compare, autoencoder=autoencoder,
        times_s=times, configs={name: json.loads((out / name / "config.json").read_text()) for name in runs},
        machine={**describe(), "commands_threads": os.environ.get("OMP_NUM_THREADS", "torch default")},
    )
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["metrics"], indent=2))


def evaluate(data: Path, out: Path, count: int, runs: list[str]) -> dict:
    from thermosynth.data.augment import fit_to_size
    from thermosynth.data.captions import caption_hituav
    from thermosynth.data.images import read_thermal
    from thermosynth.evaluation.unpaired import compare_sets
    from thermosynth.pipelines import load_text_pipeline, prepare_for_inference
    from thermosynth.render import image_grid, tensor_to_rgb

    entries = [e for e in caption_hituav(data, data) if e["split"] == "test"]
    chosen = [entries[i] for i in np.linspace(0, len(entries) - 1, min(count, len(entries))).round().astype(int)]
    prompts = [e["text"][0] for e in chosen]
    generated, metrics = {}, {}
    for name in runs:
        pipeline = prepare_for_inference(load_text_pipeline(str(out / name / "pipeline")))
        height, width = pipeline.config.image_size
        images = []
        for start in range(0, len(prompts), 16):
            batch = prompts[start : start + 16]
            generators = [torch.Generator().manual_seed(start + i) for i in range(len(batch))]
            images.append(pipeline(batch, generator=generators, num_inference_steps=25, guidance_scale=3.0,
                                   output_type="pt").images)
        generated[name] = torch.cat(images)
    real = torch.stack([
        torch.from_numpy(fit_to_size(read_thermal(data / e["file_name"]), (height, width))[0].astype(np.float32))[None]
        / 127.5 - 1 for e in chosen
    ])
    for name in runs:
        metrics[name] = compare_sets(real, generated[name])
    shown = range(min(8, len(real)))
    rows = [[tensor_to_rgb(real[i]), *(tensor_to_rgb(generated[n][i]) for n in runs)] for i in shown]
    image_grid(rows).save(out / "grid.png")
    (out / "grid_prompts.txt").write_text("".join(f"{i + 1}. {p}\n" for i, p in enumerate(prompts[:8])))
    return {"eval_images": len(chosen), "prompts_shown": prompts[:8], "metrics": metrics}


if __name__ == "__main__":
    main()
