"""How long `thermosynth evaluate` takes to score images that are already generated, per pair, on this machine.

    python benchmarks/perf/scoring.py .shipped/data/roadscene val /tmp/generated

Times `evaluate_pairs(data, split, out, generated=folder)`: the model's images and three trivial predictors scored on
SSIM, PSNR, MAE, hot IoU and W1, and the Fréchet distance and KID on EfficientNet-Lite0 features (real features from
the cache, filled by an untimed first call). The validation choice of the shipped recipe scores 20 to 41 settings
this way. Also times SSIM alone on one pair at the split's first image size. Appends a row to results.jsonl.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import torch
from common import RESULTS, record, timed

from thermosynth.data.images import read_thermal
from thermosynth.data.sources import load_pairs
from thermosynth.evaluation.paired import ssim_per_image
from thermosynth.evaluation.report import evaluate_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("split")
    parser.add_argument("generated", type=Path, help="a folder of <stem>.png, one per pair of the split")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    pairs = load_pairs(args.data, args.split)
    with tempfile.TemporaryDirectory() as out:
        seconds, first = timed(lambda: evaluate_pairs(args.data, args.split, Path(out), generated=args.generated),
                               "cpu", args.repeats)
    real, made = (torch.from_numpy(read_thermal(path).astype("float64"))[None, None]
                  for path in (pairs[0].thermal, args.generated / f"{pairs[0].visible.stem}.png"))
    ssim_seconds, _ = timed(lambda: ssim_per_image(made, real), "cpu", 5)
    row = record(RESULTS, {
        "question": "scoring per pair (evaluate, generated images given)", "data": str(args.data),
        "split": args.split, "pairs": len(pairs), "seconds_per_pair": round(seconds / len(pairs), 3),
        "first_call_seconds_per_pair": round(first / len(pairs), 3), "image_size": list(real.shape[2:]),
        "ssim_seconds_per_image": round(ssim_seconds, 4),
    }, "cpu")
    print(f"| pairs | seconds per pair | SSIM of one {real.shape[3]}x{real.shape[2]} pair |\n|---|---|---|\n"
          f"| {len(pairs)} | {row['seconds_per_pair']} | {row['ssim_seconds_per_image']} s |")


if __name__ == "__main__":
    main()
