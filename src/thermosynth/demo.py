"""`thermosynth demo`: the whole V2T workflow on the bundled samples, in CPU minutes.

Trains the `tiny` autoencoder and V2T model on 9 RoadScene pairs (+ 5 HIT-UAV frames for the autoencoder),
translates the 3 held-out pairs, and writes a grid to look at. With so little data and compute the thermal
images are rough; the point is that every stage runs, on any machine, offline.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from thermosynth.data.images import read_thermal, read_visible
from thermosynth.data.sources import roadscene_pairs
from thermosynth.render import colorize, image_grid
from thermosynth.training import DataConfig, make_config, train

logger = logging.getLogger(__name__)

SAMPLES = Path(__file__).parent / "samples"


def run_demo(out: Path, ae_steps: int = 250, v2t_steps: int = 500) -> Path:
    from thermosynth.pipelines.visible_to_thermal import VisibleToThermalPipeline
    from thermosynth.translate import translate_files

    roadscene, hituav = SAMPLES / "roadscene", SAMPLES / "hit-uav"
    autoencoder = train(make_config(
        "autoencoder", "tiny", output_dir=str(out / "autoencoder-run"), steps=ae_steps,
        data=DataConfig(paths=[str(roadscene), str(hituav)]),
    ))
    pipeline_dir = train(make_config(
        "v2t", "tiny", output_dir=str(out / "v2t-run"), steps=v2t_steps, autoencoder=str(autoencoder),
        data=DataConfig(paths=[str(roadscene)]),
    ))
    pipeline = VisibleToThermalPipeline.from_pretrained(pipeline_dir)
    pipeline.set_progress_bar_config(disable=True)
    test_pairs = roadscene_pairs(roadscene, "test")
    translated = out / "translated"
    translate_files(pipeline, [p.visible for p in test_pairs], translated, palettes=("ironbow",))

    rows = []
    for pair in test_pairs:
        made = read_thermal(translated / f"{pair.visible.stem}.png")
        real = read_thermal(pair.thermal)
        rows.append([read_visible(pair.visible), np.repeat(real[..., None], 3, 2), np.repeat(made[..., None], 3, 2),
                     colorize(made, "ironbow")])
    grid = out / "grid.png"
    image_grid(rows).save(grid)
    logger.info("rows: visible | real thermal | generated thermal | generated, ironbow")
    return grid
