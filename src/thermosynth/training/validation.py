"""The progress picture and score that translation tasks (V2T, pix2pix) share during training."""

from __future__ import annotations

from pathlib import Path

import torch

from thermosynth.render import image_grid, tensor_to_rgb
from thermosynth.training.autoencoder import ssim


def validate_translation(pipeline, visible: list[torch.Tensor], thermal: list[torch.Tensor], grid_path: Path,
                         **call_arguments) -> dict[str, float]:
    """Translate fixed crops; save a grid (visible | real | generated) and return their mean SSIM.

    These are crops of training pairs: a picture of progress, not a test-set metric."""
    pipeline.set_progress_bar_config(disable=True)
    rows, scores = [], []
    for v, t in zip(visible, thermal, strict=True):
        made = pipeline(v, output_type="pt", **call_arguments).images
        rows.append([tensor_to_rgb(v), tensor_to_rgb(t), tensor_to_rgb(made[0])])
        scores.append(ssim(made, t[None]).item())
    image_grid(rows).save(grid_path)
    return {"train_crop_ssim": sum(scores) / len(scores)}
