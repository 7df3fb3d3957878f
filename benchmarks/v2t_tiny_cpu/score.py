"""Score translated RoadScene test images against the real thermal images: mean SSIM, PSNR, MAE; and a grid.

    python benchmarks/v2t_tiny_cpu/score.py ROADSCENE_ROOT TRANSLATED_DIR OUT_GRID.jpg
"""

import json
import sys
from pathlib import Path

import numpy as np

from thermosynth.data import read_thermal, read_visible, roadscene_pairs
from thermosynth.evaluation import paired_metrics
from thermosynth.render import colorize, image_grid

root, translated, grid_path = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
pairs = roadscene_pairs(root, "test")
scores, rows = [], []
for pair in pairs:
    made, real = read_thermal(translated / f"{pair.visible.stem}.png"), read_thermal(pair.thermal)
    scores.append(paired_metrics(made, real))
    if len(rows) < 6:
        rows.append([read_visible(pair.visible), np.repeat(real[..., None], 3, 2), np.repeat(made[..., None], 3, 2),
                     colorize(made, "ironbow")])
image_grid(rows).save(grid_path, quality=85)
mean = {k: round(float(np.mean([s[k] for s in scores])), 4) for k in scores[0]}
print(json.dumps({"pairs": len(scores), **mean}))
